"""Default training recipes, one per zoo model, chosen by measurement (README: Recipes), and
how the command-line flags override them.

A recipe is every choice ``numbagrad train`` makes for a model: epochs, batch size, the
optimizer and its hyperparameters, the lr schedule (per batch, with a linear warm-up), label
smoothing and data augmentation. Each flag replaces one field; choosing another optimizer than
the recipe's takes that optimizer's own defaults (lr, momentum, weight decay) too, since the
recipe's values were tuned for its optimizer.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from ..engine import lr_scheduler, optim
from .common import OPTIMIZERS, build_optimizer

SCHEDULES = ("cosine", "constant")
DEFAULT_WEIGHT_DECAY = 5e-4


@dataclass(frozen=True)
class Recipe:
    """How to train one model; ``lr``/``momentum`` None take the optimizer's defaults."""

    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool = False
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = False
    crop_padding: int = 2

    def resolved(self) -> Recipe:
        """This recipe with the optimizer's default lr and momentum written in."""
        _, lr, momentum = OPTIMIZERS[self.optimizer]
        return dataclasses.replace(
            self,
            lr=lr if self.lr is None else self.lr,
            momentum=momentum if self.momentum is None else self.momentum,
        )

    def make_optimizer(self) -> optim.Optimizer:
        return build_optimizer(
            self.optimizer, self.lr, self.momentum, self.weight_decay, self.nesterov
        )

    def make_schedule(self, steps_per_epoch: int) -> lr_scheduler.LRSchedule:
        """The lr of every step, by step count (``lr_at(n)``: the lr of step ``n + 1``)."""
        warmup = round(self.warmup_epochs * steps_per_epoch)
        if self.schedule == "constant":
            return lr_scheduler.LinearWarmup(self.lr, warmup)
        total = self.epochs * steps_per_epoch
        return lr_scheduler.WarmupCosine(self.lr, total, min(warmup, total - 1))

    def describe(self) -> str:
        """One line for the command's output, e.g. ``sgd lr 0.05 momentum 0.9, ...``."""
        opt = f"{self.optimizer} lr {self.lr:g}"
        if self.momentum is not None:
            opt += f" momentum {self.momentum:g}" + (" nesterov" if self.nesterov else "")
        schedule = f"{self.schedule} schedule"
        if self.warmup_epochs:
            schedule += f" after a {self.warmup_epochs:g}-epoch warm-up"
        augment = "none"
        if self.augment:
            augment = f"crop padding {self.crop_padding} and flip" if self.crop_padding else "flip"
        return (
            f"{opt}, weight decay {self.weight_decay:g}, {schedule}, label smoothing "
            f"{self.label_smoothing:g}, augmentation {augment}, batch {self.batch_size}, "
            f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        )


PLAIN = Recipe(optimizer="sgd", lr=0.01, momentum=0.9)  # the untuned defaults of old

# The shared shape of the recipes below: SGD with momentum, a one-epoch linear warm-up then a
# cosine to zero over the run (per step), label smoothing 0.1, weight decay 5e-4.
_SGD_COSINE = Recipe(
    epochs=10,
    optimizer="sgd",
    momentum=0.9,
    schedule="cosine",
    warmup_epochs=1,
    label_smoothing=0.1,
)
_AUGMENTED = dataclasses.replace(_SGD_COSINE, augment=True, crop_padding=2)

RECIPES: dict[str, Recipe] = {
    # Measured (README: Recipes): flips help LeNet-5 a little; shifts cost it accuracy in 10
    # epochs (0.906 against 0.914 with flips alone, seed 0, in PyTorch with the same recipe).
    "lenet5": dataclasses.replace(_SGD_COSINE, lr=0.05, augment=True, crop_padding=0),
    "lenet5_classic": dataclasses.replace(_SGD_COSINE, lr=0.05, augment=True, crop_padding=0),
    # Batch 128: the CPU backend runs it at about twice the images/s of batch 64 here. Measured
    # (seed 0): 0.9249 after 10 epochs, 0.9325 after 20, the cosine spread over the run.
    "resnet18": dataclasses.replace(
        _AUGMENTED, epochs=20, batch_size=128, lr=0.1, nesterov=True
    ),
    # Not measured to the end here (a CPU epoch takes too long, see README): the recipe of the
    # measured model of the same family, with a lower lr for the plain (no BatchNorm) stacks.
    "resnet34": dataclasses.replace(_AUGMENTED, batch_size=128, lr=0.1, nesterov=True),
    "resnet50": dataclasses.replace(_AUGMENTED, batch_size=128, lr=0.1, nesterov=True),
    "googlenet": dataclasses.replace(_AUGMENTED, batch_size=128, lr=0.1, nesterov=True),
    "alexnet": dataclasses.replace(_AUGMENTED, lr=0.01),
    "vgg11": dataclasses.replace(_AUGMENTED, lr=0.01),
    "vgg16": dataclasses.replace(_AUGMENTED, lr=0.01),
    # Sequence models read the image row by row: a mirrored row is another sequence, so no
    # augmentation; Adam(W), as usual for them.
    "lstm_classifier": Recipe(
        epochs=10, optimizer="adam", lr=2e-3, weight_decay=0.0, schedule="cosine",
        warmup_epochs=1, label_smoothing=0.1,
    ),
    "transformer_encoder": Recipe(
        epochs=10, optimizer="adamw", lr=1e-3, weight_decay=0.01, schedule="cosine",
        warmup_epochs=1, label_smoothing=0.1,
    ),
}  # fmt: skip

# Flag (argparse dest) -> recipe field, for the flags that override one field each.
FIELD_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "label_smoothing",
    "augment",
    "crop_padding",
)


def recipe_for(model: str, args: argparse.Namespace | None = None) -> Recipe:
    """The model's recipe with the flags in ``args`` (None where not given) applied,
    resolved (no None left but momentum for optimizers that take none)."""
    recipe = RECIPES.get(model, PLAIN)
    if args is None:
        return recipe.resolved()
    if args.optimizer is not None and args.optimizer != recipe.optimizer:
        recipe = Recipe(
            **{k: getattr(recipe, k) for k in ("epochs", "batch_size", "schedule")},
            warmup_epochs=recipe.warmup_epochs,
            label_smoothing=recipe.label_smoothing,
            augment=recipe.augment,
            crop_padding=recipe.crop_padding,
            optimizer=args.optimizer,
        )
    given = {k: getattr(args, k) for k in FIELD_FLAGS if getattr(args, k, None) is not None}
    recipe = dataclasses.replace(recipe, **given)
    _, _, default_momentum = OPTIMIZERS[recipe.optimizer]
    if default_momentum is None and recipe.momentum is not None:
        recipe.make_optimizer()  # the one-line refusal of --momentum for this optimizer
    return recipe.resolved()
