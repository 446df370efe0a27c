"""Split learning leakage: a client/server split CNN, what each party sees, attacks on it and defenses.

The client holds the first blocks, the server the rest; the server sees the cut layer's activations
("smashed data") and returns their gradients (Vepakomma et al. 2018). Attacks: white-box inversion of the smashed
data (He et al. 2019), UnSplit (Erdogan et al. 2022), label leakage from the returned gradients (Li et al. 2022).
Defenses: noise on the smashed data, NoPeek (Vepakomma et al. 2020), returned-gradient perturbation.
"""

from gradleak.split.defenses import SplitDefense, distance_correlation, equalise_and_noise
from gradleak.split.inversion import unsplit_inversion, white_box_inversion
from gradleak.split.label_leakage import cosine_attack_scores, leakage_auc, norm_attack_scores
from gradleak.split.model import SplitCNN
from gradleak.split.simulation import SplitObservation, SplitRun, train_split

__all__ = [
    "SplitCNN", "SplitDefense", "SplitObservation", "SplitRun", "cosine_attack_scores", "distance_correlation",
    "equalise_and_noise", "leakage_auc", "norm_attack_scores", "train_split", "unsplit_inversion",
    "white_box_inversion",
]
