"""The price of an update defense on text: ``text_defense_cost`` (held-out accuracy or perplexity of a tiny model
fine-tuned with every step's update defended), measured in ``gradleak.utility`` beside the images' measurement
(the same batch draws, defended update and training loop); its names are kept here for text code."""

from __future__ import annotations

from gradleak.utility import TextUtility, text_defense_cost

__all__ = ["TextUtility", "text_defense_cost"]
