"""What ``attack`` reads instead of a capture: the user's own model source (registry name, trusted factory, or
a Hugging Face architecture from its config), weights, update and input description, as one Observation."""

from __future__ import annotations

import argparse
from typing import Any

from gradleak.capture import load_capture
from gradleak.cli.flags import named_model, parse_assignments, parse_floats
from gradleak.errors import ConfigError
from gradleak.inputs import FeatureInput, ImageInput, TokenInput
from gradleak.limits import read_json_file
from gradleak.model_spec import ModelSpec, model_spec_for
from gradleak.observation import LocalTraining, Observation
from gradleak.training_task import Task
from gradleak.tensor_files import observation_from_files


def model_spec_from_args(args: argparse.Namespace) -> ModelSpec:
    """``--model`` of ``attack``: ``hf:TYPE`` with ``--model-config``, a factory named here (trusted by that act), or
    a registry name."""
    source, kwargs = args.model, parse_assignments(args.model_arg, "--model-arg")
    if source.startswith("hf:"):
        if not args.model_config:
            raise ConfigError("hf: models need --model-config (the model's config.json)")
        config = read_json_file(args.model_config, error=ConfigError)  # depth-bounded: the file is a stranger's
        if not isinstance(config, dict):
            raise ConfigError(f"{args.model_config}: a config must be a JSON object")
        config.pop("model_type", None)
        return ModelSpec(source[3:], {"config": {**config, **kwargs}, "head": args.hf_head}, source="huggingface")
    # a registry name or a factory named here (trusted, as every command trusts a --model it is given)
    return model_spec_for(named_model(args), kwargs)


def observation_from_args(args: argparse.Namespace) -> Observation:
    """A capture, or an Observation from the user's own model source, weights and update files."""
    own = [f for f in ("model", "weights", "update") if getattr(args, f) is not None]
    if args.capture is not None:
        if own:
            raise ConfigError(f"give a capture file or --model/--weights/--update, not both (got --{own[0]})")
        return load_capture(args.capture, trust=args.trust_model)
    if len(own) != 3:
        raise ConfigError("without a capture file, give --model, --weights and --update (and the input description)")
    spec = model_spec_from_args(args)
    if args.input_kind == "image":
        if not args.input_shape:
            raise ConfigError("image inputs need --input-shape C,H,W")
        try:
            shape = tuple(int(t) for t in args.input_shape.split(","))
        except ValueError:
            raise ConfigError(f"--input-shape expects C,H,W integers, got {args.input_shape!r}") from None
        if len(shape) != 3:
            raise ConfigError(f"--input-shape expects C,H,W, got {args.input_shape!r}")
        c = shape[0]
        inputs: Any = ImageInput(shape, parse_floats(args.mean, "--mean") or (0.0,) * c,  # type: ignore[arg-type]
                                 parse_floats(args.std, "--std") or (1.0,) * c)
    elif args.input_kind == "features":
        if args.num_features is None:
            raise ConfigError("feature inputs need --num-features")
        inputs = FeatureInput(args.num_features, parse_floats(args.mean, "--mean"), parse_floats(args.std, "--std"))
    else:
        if args.seq_len is None or args.vocab_size is None:
            raise ConfigError("token inputs need --seq-len and --vocab-size")
        inputs = TokenInput(args.seq_len, args.vocab_size, args.pad_token_id)
    kind = args.task or ("causal_lm" if spec.source == "huggingface" and args.hf_head == "causal_lm" else
                         "masked_lm" if spec.source == "huggingface" and args.hf_head == "masked_lm" else
                         "classification")
    if kind == "classification" and args.num_classes is None:
        raise ConfigError("a classification task needs --num-classes")
    task = Task(kind, args.num_classes if kind == "classification" else None)  # type: ignore[arg-type]
    local = None
    if args.update_kind == "weight_delta":
        if args.local_lr is None:
            raise ConfigError("a weight delta needs --local-lr (and --local-steps, --local-batch-size)")
        local = LocalTraining(args.local_steps, args.local_lr, args.local_batch_size or args.batch_size)
    return observation_from_files(spec, args.weights, args.update, inputs=inputs, task=task,
                                  batch_size=args.batch_size, update_kind=args.update_kind, local_training=local,
                                  model_mode=args.model_mode)
