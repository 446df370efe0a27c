"""Where a model comes from, by kind, and what loading one may execute.

A ``ModelSpec`` rebuilds the architecture the server sent (weights come from the capture) in another process:

- ``registry``: a model of gradleak's own zoo by name (``gradleak.models.MODELS``); nothing outside gradleak runs.
- ``huggingface``: a ``transformers`` architecture from its config (``AutoConfig.for_model`` + ``from_config``):
  only code that ships inside ``transformers`` runs; ``auto_map``/remote code is refused, nothing is downloaded.
- ``import``: the user's own factory, ``package.module:factory`` or ``path/to/file.py:factory``. Importing a
  module runs its code, so a spec read from a file is built only when the user trusted that very factory
  (``trust_model("pkg.mod:factory")``, ``--trust-model pkg.mod:factory``): trusting a module is not enough, or a
  file could call any other function of it. The settings a file gives the factory are bound to its signature
  (named parameters only, JSON scalars and lists) before it is called. A factory named on the command line or a
  callable handed over in Python is trusted by that act.
- ``instance``: a live ``nn.Module`` handed over in Python (``gradleak.record``), copied for each build; saved to a
  capture as the import path of its class (or the factory the user names).

Before anything is allocated, the model is built on the ``meta`` device to count its parameters against
``gradleak.limits``; a Hugging Face config is checked first (the sizes its architecture divides or allocates by,
and its number of layers, which costs time even on the meta device).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from gradleak import limits
from gradleak.errors import CaptureError, ConfigError
from gradleak.models.registry import build_model  # importing it imports the zoo package: every model registered
from gradleak.training_task import is_huggingface

ModelSource = Literal["registry", "import", "huggingface", "instance"]
MODEL_SOURCES: tuple[str, ...] = ("registry", "import", "huggingface", "instance")
HF_HEADS: dict[str, str] = {
    "causal_lm": "AutoModelForCausalLM",
    "masked_lm": "AutoModelForMaskedLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "base": "AutoModel",
    "image_classification": "AutoModelForImageClassification",
}
#: config keys that would make ``transformers`` fetch or run code from outside the package
_HF_REFUSED_KEYS = ("auto_map", "trust_remote_code", "custom_pipelines")

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_PATH = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")
_FILE_PATH = re.compile(rf"^[^:\x00]+\.py:{_IDENT}(\.{_IDENT})*$")

#: factories the user trusted (``module:attr``, a file module by its resolved path)
_TRUSTED_FACTORIES: set[str] = set()
#: modules named without a factory: their import is allowed where a caller checks a module (a federation
#: config), but no factory of theirs is trusted by it
_TRUSTED_MODULES: set[str] = set()


def trust_model(*names: str) -> None:
    """Allow building models with these factories (``pkg.mod:factory`` or ``path/file.py:factory``).

    A bare module (``pkg.mod``) is recorded too, but trusts none of its functions for a capture: a capture's factory
    must be one named here, exactly, so that it cannot call another function of a trusted module."""
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise CaptureError(f"a trusted model must be named as 'package.module:factory', got {name!r}")
        if _names_factory(name):
            _TRUSTED_FACTORIES.add(_factory_key(name))
        else:
            _TRUSTED_MODULES.add(_module_key(name))


def _names_factory(name: str) -> bool:
    return ".py:" in name or (":" in name and not name.endswith(".py"))


def _module_key(module: str) -> str:
    if module.endswith(".py") or "/" in module:
        return str(Path(module).resolve())
    return module


def _factory_key(path: str) -> str:
    module, attr = path.rsplit(":", 1)
    return f"{_module_key(module)}:{attr}"


def is_trusted(name: str) -> bool:
    """Whether the user trusted ``name``: a factory (``module:attr``) only when named itself; a module when it, a
    package above it, or one of its factories was named."""
    if _names_factory(name):
        return _factory_key(name) in _TRUSTED_FACTORIES
    key = _module_key(name)
    modules = _TRUSTED_MODULES | {f.rsplit(":", 1)[0] for f in _TRUSTED_FACTORIES}
    return key in modules or any(key.startswith(t + ".") for t in modules)


def split_import_path(path: str) -> tuple[str, str]:
    """``"pkg.mod:factory"`` or ``"dir/file.py:factory"`` -> (module or file, attribute path); malformed -> error."""
    if not isinstance(path, str) or not (_MODULE_PATH.match(path) or _FILE_PATH.match(path)):
        raise CaptureError(f"model import path must look like 'package.module:factory' or 'path/file.py:factory', "
                           f"got {path!r}")
    module, attr = path.rsplit(":", 1)
    return module, attr


#: the settings every image victim passes its model (``experiment.make_victim``, the Flower clients)
_IMAGE_SETTINGS = ("in_channels", "num_classes", "image_size")


def hf_image_classifier(model_type: str, kwargs: dict[str, Any]) -> ModelSpec:
    """A ``transformers`` image classifier (ViT, ConvNeXt, ...; ``AutoModelForImageClassification``) from its
    config, shaped by the victim's settings: ``in_channels`` -> ``num_channels``, ``num_classes`` ->
    ``num_labels``, ``image_size``. ``kwargs`` holds those settings and ``config`` (a JSON object), nothing else."""
    settings = {k: v for k, v in kwargs.items() if k in _IMAGE_SETTINGS}
    if unknown := sorted(set(kwargs) - set(_IMAGE_SETTINGS) - {"config"}):
        raise ConfigError(f"Hugging Face model {model_type!r}: unknown setting {unknown[0]!r} (give the "
                          "architecture's settings in its config)")
    config = kwargs.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError(f"Hugging Face model {model_type!r}: its config must be a JSON object")
    shaped = {**config, **{name: settings[key] for key, name in (("in_channels", "num_channels"),
                                                                   ("num_classes", "num_labels"),
                                                                   ("image_size", "image_size")) if key in settings}}
    shaped.pop("model_type", None)
    return ModelSpec(model_type, {"config": shaped, "head": "image_classification"}, source="huggingface")


class ImageClassifierLogits(nn.Module):
    """A ``transformers`` image classifier as every gradleak image model is: pixels in, logits out (its own
    forward returns an output object), so that victims, attacks and metrics use it unchanged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).logits


@contextmanager
def _on_import_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while a trusted user module is imported, so that neither a module named by
    file path nor the modules beside it need ``PYTHONPATH``; removed afterwards (what was imported stays)."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def model_spec_for(model: str, kwargs: dict[str, Any], *, flag: str = "--trust-model") -> ModelSpec:
    """A model as configs and flags name it by one string: a registry name, the user's own factory
    (``package.module:factory``, ``path/file.py:factory``), which must be trusted (``trust_model``) because
    importing it runs its code, or ``hf:MODEL_TYPE``, a ``transformers`` image classifier built from
    ``kwargs["config"]`` (``hf_image_classifier``). A file path is made absolute: Ray and Flower workers may run
    in another folder."""
    if not isinstance(model, str) or ":" not in model:
        return ModelSpec(model, kwargs)
    if model.startswith("hf:"):
        return hf_image_classifier(model[3:], kwargs)
    module, attr = split_import_path(model)
    if not is_trusted(model):  # the factory itself: trusting a module trusts none of its functions
        raise ConfigError(f"model {model!r} would import {module!r} and call {attr!r}, which runs its code; pass "
                          f"{flag} {model} if you trust it")
    name = f"{Path(module).resolve()}:{attr}" if module.endswith(".py") else model
    return ModelSpec(name, kwargs, source="import", trusted=True)


def _import_factory(path: str, trusted: bool = False) -> Callable[..., Any]:
    module_name, attr = split_import_path(path)
    if not (trusted or is_trusted(path)):
        if is_trusted(module_name):
            raise CaptureError(
                f"model {path!r} is not a factory you trusted: trust names one factory of {module_name!r}, not "
                f"every function in it. Pass --trust-model {path} (or gradleak.trust_model({path!r})) if you "
                f"trust that function")
        raise CaptureError(
            f"model {path!r} would import {module_name!r}, which runs its code; it is not trusted. Pass "
            f"--trust-model {path} (or gradleak.trust_model({path!r})) if you trust it")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).resolve()
            if not file.is_file():
                raise CaptureError(f"model file {module_name!r} does not exist")
            unique = "gradleak_user_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
            module = sys.modules.get(unique)
            if module is None:
                spec = importlib.util.spec_from_file_location(unique, file)
                if spec is None or spec.loader is None:
                    raise CaptureError(f"cannot import model file {module_name!r}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[unique] = module
                try:
                    with _on_import_path(file.parent):  # the file's own imports of modules beside it
                        spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[unique]  # a half-run module must not pass for the file on the next build
                    raise
        else:
            with _on_import_path(Path.cwd()):  # as `python -m` finds it; the `gradleak` script does not
                module = importlib.import_module(module_name)
    except CaptureError:
        raise
    except Exception as exc:  # the user's module failed to import: say so in one line
        raise CaptureError(f"importing model module {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CaptureError(f"model factory {path!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CaptureError(f"model factory {path!r} is not callable")
    return obj


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (messages of ``transformers`` span several), at most 300 characters."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _plain_json(value: Any, where: str, depth: int = 0) -> None:
    """Settings must be plain JSON (no objects that could carry behaviour), bounded in depth."""
    if depth > 16:
        raise CaptureError(f"{where} is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _plain_json(v, where, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CaptureError(f"{where} has a non-string key {k!r}")
            _plain_json(v, where, depth + 1)
        return
    raise CaptureError(f"{where} holds a {type(value).__name__}; only JSON values are allowed")


def _check_factory_settings(factory: Callable[..., Any], path: str, kwargs: dict[str, Any], trusted: bool) -> None:
    """Before a factory is called: its settings must name its own parameters (a ``**kwargs`` catch-all counts only
    for a spec the user handed over) and, from a file, be JSON scalars or lists of them."""
    if not trusted:
        for key, value in kwargs.items():
            if not _scalar_or_list(value):
                raise CaptureError(f"model factory {path!r}: setting {key!r} must be a number, string, boolean, "
                                   f"null or a list of them, got {type(value).__name__}")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        if kwargs and not trusted:
            raise CaptureError(f"model factory {path!r} has no inspectable signature; its settings "
                               f"{sorted(kwargs)} cannot be checked") from None
        return
    params = signature.parameters.values()
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    catch_all = any(p.kind is p.VAR_KEYWORD for p in params)
    if unknown := [k for k in kwargs if k not in named and not (trusted and catch_all)]:
        raise CaptureError(f"model factory {path!r} has no parameter {unknown[0]!r} (its parameters: "
                           f"{', '.join(named) or 'none'})")
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise CaptureError(f"model factory {path!r} cannot be called with settings {sorted(kwargs)}: {exc}") from None


def _check_list_lengths(value: Any, where: str) -> None:
    """A list in a model's settings is, in practice, one entry per layer (``mlp``'s ``hidden``): bounded like a
    config's layers, since each layer costs time even on the meta device (20,000 take seconds)."""
    if isinstance(value, dict):
        for v in value.values():
            _check_list_lengths(v, where)
    elif isinstance(value, (list, tuple)):
        limits.check("layers", len(value), f"{where}: a list of layers")
        for v in value:
            _check_list_lengths(v, where)


def _scalar_or_list(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, list) and all(_scalar_or_list(v) for v in value)


#: the sizes a Hugging Face architecture divides or allocates by, under the names configs use for them
_HF_LAYERS = ("num_hidden_layers", "num_layers", "num_decoder_layers", "num_encoder_layers", "encoder_layers",
              "decoder_layers")
_HF_HEADS = ("num_attention_heads", "num_key_value_heads", "encoder_attention_heads", "decoder_attention_heads",
             "num_heads")
_HF_WIDTHS = ("hidden_size", "intermediate_size", "n_inner", "head_dim", "d_model", "d_ff", "d_kv",
              "encoder_ffn_dim", "decoder_ffn_dim", "embedding_size", "type_vocab_size")


def _check_hf_config(model_type: str, config: Any) -> None:
    """The fields of a built ``PretrainedConfig`` that ``transformers`` divides or allocates by, checked before any
    module is made: positive integers, hidden size divisible by heads, layers, positions and vocabulary within
    ``gradleak.limits``."""
    where = f"Hugging Face config of {model_type!r}"

    def size(name: str, limit: str | None = None) -> None:
        value = getattr(config, name, None)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CaptureError(f"{where}: {name} must be a positive integer, got {value!r}")
        if limit is not None:
            limits.check(limit, value, f"{where}: {name}")

    for name in _HF_LAYERS:
        size(name, "layers")
    for name in _HF_HEADS + _HF_WIDTHS:
        size(name)
    size("vocab_size", "vocab_size")
    size("max_position_embeddings", "seq_len")
    size("num_labels", "num_classes")
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if heads and hidden and getattr(config, "head_dim", None) is None and hidden % heads:
        raise CaptureError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    kv = getattr(config, "num_key_value_heads", None)
    if heads and kv and heads % kv:
        raise CaptureError(f"{where}: num_attention_heads {heads} is not divisible by num_key_value_heads {kv}")


@dataclass(frozen=True)
class ModelSpec:
    """A model by ``source`` (see the module docstring) and settings, enough to rebuild it in another process."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: ModelSource = "registry"
    template: nn.Module | None = field(default=None, compare=False, repr=False)
    #: set when the user handed this spec over themselves (a callable, a command-line flag): it travels with the
    #: spec to other processes (Ray workers); a spec read from a file never carries it
    trusted: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.source not in MODEL_SOURCES:
            raise CaptureError(f"model source must be one of {list(MODEL_SOURCES)}, got {self.source!r}")
        if not isinstance(self.name, str) or not self.name:
            raise CaptureError(f"model name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.kwargs, dict):
            raise CaptureError(f"model kwargs must be an object, got {type(self.kwargs).__name__}")
        if self.source != "instance":
            _plain_json(self.kwargs, f"settings of model {self.name!r}")
        if self.source == "import":
            split_import_path(self.name)
        if self.source == "instance" and self.template is None:
            raise CaptureError("an 'instance' model spec needs the module (ModelSpec.from_module)")
        if self.source == "huggingface":
            if self.kwargs.get("head", "base") not in HF_HEADS:
                raise CaptureError(f"Hugging Face head must be one of {list(HF_HEADS)}, got {self.kwargs.get('head')!r}")
            config = self.kwargs.get("config", {})
            if not isinstance(config, dict):
                raise CaptureError("Hugging Face 'config' must be an object")
            if bad := [k for k in _HF_REFUSED_KEYS if k in config]:
                raise CaptureError(f"Hugging Face config key {bad[0]!r} would load code from outside transformers; "
                                   f"refused")

    # -- constructors ----------------------------------------------------------------------------------
    @classmethod
    def huggingface(cls, config: Any, head: str = "causal_lm") -> ModelSpec:
        """A ``transformers`` architecture from its config (a ``PretrainedConfig`` or a dict with ``model_type``)."""
        data = config.to_diff_dict() if hasattr(config, "to_diff_dict") else dict(config)
        model_type = data.pop("model_type", None) or getattr(config, "model_type", None)
        if not model_type:
            raise ConfigError("a Hugging Face config needs its model_type")
        for key in ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype"):
            data.pop(key, None)
        return cls(str(model_type), {"config": json.loads(json.dumps(data)), "head": head}, source="huggingface")

    @classmethod
    def from_factory(cls, factory: Callable[..., nn.Module] | str, **kwargs: Any) -> ModelSpec:
        """The user's factory (a callable, or its import path, trusted by being handed over here)."""
        path = factory if isinstance(factory, str) else f"{factory.__module__}:{factory.__qualname__}"
        module, _ = split_import_path(path)
        trust_model(module)
        return cls(path, dict(kwargs), source="import", trusted=True)

    @classmethod
    def from_module(cls, model: nn.Module, factory: str | None = None, **kwargs: Any) -> ModelSpec:
        """A live module: each build is a copy of it (its current weights). ``factory`` is the import path a capture
        records for rebuilding it elsewhere (default: the module's class, called with ``kwargs``)."""
        path = factory or f"{type(model).__module__}:{type(model).__qualname__}"
        return cls(path, dict(kwargs), source="instance", template=copy.deepcopy(model).cpu())

    # -- building ----------------------------------------------------------------------------------------
    def _construct(self) -> nn.Module:
        if self.source == "registry":
            try:
                return build_model(self.name, **self.kwargs)
            except ConfigError as exc:
                raise CaptureError(str(exc)) from exc
            except (ValueError, TypeError, RuntimeError) as exc:
                raise CaptureError(f"model {self.name!r} rejected its settings {self.kwargs}: {exc}") from exc
        if self.source == "huggingface":
            return self._construct_huggingface()
        if self.source == "instance":
            assert self.template is not None
            return copy.deepcopy(self.template)
        factory = _import_factory(self.name, self.trusted)
        _check_factory_settings(factory, self.name, self.kwargs, self.trusted)
        try:
            model = factory(**self.kwargs)
        except Exception as exc:  # the user's factory: report, don't traceback
            raise CaptureError(f"model factory {self.name!r} failed with settings {self.kwargs}: "
                               f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise CaptureError(f"model factory {self.name!r} returned {type(model).__name__}, not a torch nn.Module")
        return model

    def _huggingface_config(self) -> Any:
        """The checked ``PretrainedConfig`` (``_check_hf_config``); nothing of the model is made yet."""
        try:
            import transformers
        except ImportError as exc:  # pragma: no cover - the text extra is installed in every setup here
            raise CaptureError("Hugging Face models need the 'transformers' package (pip install gradleak[text])") from exc
        config_data = dict(self.kwargs.get("config", {}))
        labels = config_data.get("num_labels")  # transformers makes a dict of this many names when it reads it
        if isinstance(labels, int) and not isinstance(labels, bool):
            limits.check("num_classes", labels, f"Hugging Face config of {self.name!r}: num_labels")
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its warnings about a stranger's config would print lines of
        try:  # their own before (or instead of) gradleak's one line; what matters is checked below
            config = transformers.AutoConfig.for_model(self.name, **config_data)
        except Exception as exc:  # transformers refused the config: the file's fault, said in one line
            raise CaptureError(f"Hugging Face model {self.name!r} cannot be built from its config: "
                               f"{type(exc).__name__}: {_one_line(exc)}") from exc
        finally:
            transformers.logging.set_verbosity(verbosity)
        _check_hf_config(self.name, config)
        return config

    def _construct_huggingface(self, config: Any = None) -> nn.Module:
        import transformers  # heavy (seconds): loaded only when a Hugging Face model is built

        config = self._huggingface_config() if config is None else config
        head = self.kwargs.get("head", "base")
        try:
            if head == "image_classification":  # eager attention: gradient matching differentiates the
                # gradient, and PyTorch's fused attention kernels have no second derivative on CPU
                return ImageClassifierLogits(getattr(transformers, HF_HEADS[head]).from_config(
                    config, attn_implementation="eager"))
            return getattr(transformers, HF_HEADS[head]).from_config(config)
        except Exception as exc:  # checked fields aside, transformers may still refuse: the file's fault
            raise CaptureError(f"Hugging Face model {self.name!r} ({head}) cannot be built from its config: "
                               f"{type(exc).__name__}: {_one_line(exc)}") from exc

    def count_parameters(self) -> int | None:
        """Parameters of the model, counted on the meta device (nothing allocated); ``None`` if it cannot be (a
        user factory that does real work at init). A Hugging Face config is checked, and counted, before any module
        is made; a registry or Hugging Face model that cannot be made on the meta device is an error here."""
        if self.source == "instance":
            assert self.template is not None
            return sum(p.numel() for p in self.template.parameters())
        if self.source == "import":
            factory = _import_factory(self.name, self.trusted)  # trust comes before anything of the user's runs
            _check_factory_settings(factory, self.name, self.kwargs, self.trusted)
        if self.source == "registry" or (self.source == "import" and not self.trusted):
            _check_list_lengths(self.kwargs, f"settings of model {self.name!r}")
        config = self._huggingface_config() if self.source == "huggingface" else None
        try:
            with torch.device("meta"):
                model = self._construct_huggingface(config) if config is not None else self._construct()
        except CaptureError:
            if self.source == "import":
                return None
            raise
        except Exception:  # a model that does real work at init cannot be made on meta: count after building
            return None
        return sum(p.numel() for p in model.parameters())

    def build(self) -> nn.Module:
        """The architecture, freshly initialised (or copied, for an instance), after the size check."""
        count = self.count_parameters()
        if count is not None:
            limits.check("parameters", count, f"model {self.name!r} parameter count")
        model = self._construct()
        if count is None:
            limits.check("parameters", sum(p.numel() for p in model.parameters()),
                         f"model {self.name!r} parameter count")
        return model

    # -- files ---------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        source = "import" if self.source == "instance" else self.source
        return {"source": source, "name": self.name, "kwargs": self.kwargs}

    @classmethod
    def from_json(cls, data: Any) -> ModelSpec:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise CaptureError("metadata 'model' must be an object with a string 'name' and 'kwargs'")
        source = data.get("source", "registry")
        if source == "instance":
            raise CaptureError("a capture cannot hold a live model instance; expected source 'import'")
        kwargs = data.get("kwargs", {})
        return cls(data["name"], kwargs if isinstance(kwargs, dict) else kwargs, source=source)

    def describe(self) -> str:
        return {"registry": f"{self.name} (gradleak registry)", "huggingface": f"{self.name} (transformers, "
                f"{self.kwargs.get('head', 'base')})", "import": f"{self.name} (user code)",
                "instance": f"{self.name} (live module)"}[self.source]


def huggingface_head(model: nn.Module) -> str:
    """The ``ModelSpec.huggingface`` head of a ``transformers`` model (or of the model a PEFT wrapper holds),
    from its class name."""
    if callable(getattr(model, "get_base_model", None)):
        model = model.get_base_model()
    kind = type(model).__name__
    if "CausalLM" in kind or "LMHead" in kind:
        return "causal_lm"
    if "MaskedLM" in kind:
        return "masked_lm"
    if "SequenceClassification" in kind:
        return "sequence_classification"
    return "base"


def spec_of(model: nn.Module, factory: str | None = None, model_kwargs: dict[str, Any] | None = None) -> ModelSpec:
    """How the attacker rebuilds the user's model: its Hugging Face config for a ``transformers`` model, else the
    live module, saved as ``factory`` (default: its class's import path) called with ``model_kwargs``."""
    if factory is None and model_kwargs is None and is_huggingface(model) \
            and not callable(getattr(model, "get_base_model", None)):
        return ModelSpec.huggingface(model.config, huggingface_head(model))  # type: ignore[arg-type]
    return ModelSpec.from_module(model, factory, **(model_kwargs or {}))
