"""Split learning leakage: a client/server split CNN, what each party sees, attacks on it and defenses.

The client holds the first blocks, the server the rest; the server sees the cut layer's activations
("smashed data") and returns their gradients (Vepakomma et al. 2018). Attacks: white-box inversion of the smashed
data (He et al. 2019), UnSplit (Erdogan et al. 2022), label leakage from the returned gradients (Li et al. 2022).
Defenses: noise on the smashed data, NoPeek (Vepakomma et al. 2020), returned-gradient perturbation. Every leak
is scored beside a guess (``scoring``), on a network that learned (``SplitRun.learned``).
"""

from gradleak.split.defenses import SplitDefense, distance_correlation, equalise_and_noise
from gradleak.split.inversion import unsplit_inversion, white_box_inversion
from gradleak.split.label_leakage import cosine_attack_scores, infer_labels, leakage_auc, norm_attack_scores
from gradleak.split.model import SplitCNN
from gradleak.split.scoring import (LEAKED_LABEL_SHARE, LabelLeakage, guess_reconstructions, score_inversion,
                                    score_label_leakage)
from gradleak.split.simulation import LEARNED_SHARE, SplitObservation, SplitRun, errors_removed, train_split

__all__ = [
    "LEAKED_LABEL_SHARE", "LEARNED_SHARE", "LabelLeakage", "SplitCNN", "SplitDefense", "SplitObservation",
    "SplitRun", "cosine_attack_scores", "distance_correlation", "equalise_and_noise", "errors_removed",
    "guess_reconstructions", "infer_labels", "leakage_auc", "norm_attack_scores", "score_inversion",
    "score_label_leakage", "train_split", "unsplit_inversion", "white_box_inversion",
]
