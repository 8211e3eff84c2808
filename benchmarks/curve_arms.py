"""What `learning_curves.py` measures: its arms (a bundled MNIST config with overrides each) and issue 13's goals."""

from dataclasses import dataclass

SEARCHED = "2s"  # a scores entry's key for 2 steps at the searched σ (`--phase search`)


@dataclass
class Arm:
    """One curve: a bundled MNIST config (`mnist_{kind}`), overrides, the run's length and checkpoints."""

    kind: str
    overrides: list[str]
    steps: int
    group: str  # "method" or the ablated factor
    teacher_key: str | None = None
    checkpoints: int = 5
    note: str = ""
    run: str | None = None  # score the run of this other arm instead of training one
    weights: str | None = None  # the weight set scored (default: the first evaluation EMA)
    teacher_arm: str | None = None  # the teacher arm whose run is this arm's teacher (default: --teacher)
    first_stage: bool = False  # the teacher arm is this run's own first stage, not a teacher (see "ECT from scratch")


CD = "cd.teacher"
# The CD recipe the ablations change one setting of: mnist_cd when they ran (N = 18, the ramp EMA). mnist_cd now
# grows N and keeps the mean of its weights, the arm "CD N 6→18, mean of weights".
CD_REFERENCE = ["cd.grow_from=0", "train.ema_power=8"]
# mnist_cd's growing N and mean of the weights, spelled out: the arms built on them stay the same runs when its
# defaults change
GROWING_N_MEAN = ["cd.grow_from=6", "train.ema_power=0"]
# mnist_cd's recipe before it took the adversarial term (now the arm "CD adversarial λ 1 on one-step samples, N 6→18,
# mean of weights"; the arm "CD" is mnist_cd as bundled at the time of the run)
MNIST_CD = [*GROWING_N_MEAN, "cd.adversarial_weight=0"]


def adversarial_arm(weight: int, fakes: str) -> Arm:
    """mnist_cd's growing N and mean with the adversarial term at λ = `weight` on `fakes` (pairs or one-step)."""
    overrides = [*GROWING_N_MEAN, f"cd.adversarial_weight={weight}", f"cd.adversarial_fakes={fakes}"]
    return Arm("cd", overrides, 600, "adversarial term", CD, checkpoints=3)


# a coarse grid with a fine teacher: N = 10, 4 Heun substeps per interval, the mean of the weights
N10_SUBSTEPS = ["cd.num_points=10", "cd.teacher_substeps=4", "train.ema_power=0"]
ARMS: dict[str, Arm] = {
    # The methods with their bundled configs.
    "CD": Arm("cd", [], 600, "method", CD),
    "ECT": Arm("ect", [], 600, "method", "ect.teacher"),
    "sCD": Arm("scm", ["scm.mode=scd"], 300, "method", "scm.teacher"),
    # CT at mnist_ct's former rate, 4e-4, spelled out: the same run since mnist_ct took 1.2e-3 ("CT learning rate")
    "CT": Arm("ct", ["optim.lr=4e-4"], 800, "method"),
    "iCT": Arm("ict", [], 800, "method"),
    # iCT given the whole budget of issue 13's from-scratch goal: the teacher's own 69 CPU-minutes.
    "iCT 2200 steps": Arm("ict", [], 2200, "method"),
    "sCT": Arm("scm", ["scm.mode=sct"], 400, "method"),
    # Ablations of CD (issue 13's deliverable 2), 360 steps each: compare with CD at step 360.
    "CD pseudo-Huber": Arm("cd", ["cd.distance=pseudo-huber"], 360, "distance", CD, checkpoints=3),
    "CD N=40": Arm("cd", ["cd.num_points=40"], 360, "N", CD, checkpoints=3),
    "CD N=80": Arm("cd", ["cd.num_points=80"], 360, "N", CD, checkpoints=3),
    "CD cosine lr": Arm("cd", ["optim.decay=cosine"], 360, "learning-rate decay", CD, checkpoints=3),
    "CD N=10": Arm("cd", ["cd.num_points=10"], 360, "N", CD, checkpoints=3),
    "CD target mu=0.95": Arm("cd", ["cd.target_ema=0.95"], 360, "target μ", CD, checkpoints=3),
    # Shorter ablations, 240 steps: compare with CD at step 240.
    "CD N=6": Arm("cd", ["cd.num_points=6"], 240, "N", CD, checkpoints=2),
    "CD lr 4e-4": Arm("cd", ["optim.lr=4e-4"], 240, "learning rate", CD, checkpoints=2),
    "CD N 6→18": Arm("cd", ["cd.grow_from=6"], 240, "N", CD, checkpoints=2),
    # checkpointed every 20 steps: its online weights also serve the weight-averaging study
    "CD N 6→18, 600 steps": Arm("cd", ["cd.grow_from=6"], 600, "N", CD, checkpoints=30),
    "CD inverse-delta weight": Arm("cd", ["cd.weighting=inverse-delta"], 240, "loss weighting", CD, checkpoints=2),
    "CD Euler teacher": Arm("cd", ["cd.solver=euler"], 240, "teacher solver", CD, checkpoints=2),
    # The same run as CD (same seed, same online weights) with an evaluation EMA over all of it (averaging.md).
    "CD mean of weights": Arm("cd", ["train.ema_power=0"], 600, "EMA rate", CD),
    # Both: the growing N of the run above with the mean of its weights (averaging.md's γ = 0, trained).
    "CD N 6→18, mean of weights": Arm("cd", MNIST_CD, 600, "EMA rate", CD),
    # The same recipe run 1300 steps (mnist_cd's former length): N grows from 6 to 18 over all of them.
    "CD N 6→18, mean of weights, 1300 steps": Arm("cd", MNIST_CD, 1300, "training length", CD),
    # That run's best checkpoint came at step 780, with N near 13: N growing to 12 instead of 18, over 600 steps.
    "CD N 6→12, mean of weights": Arm("cd", ["cd.grow_from=6", "cd.num_points=12", "train.ema_power=0"], 600, "N", CD),
    # A fine teacher (cd.teacher_substeps = k): the teacher's step between adjacent points of the N-point grid is k
    # Heun steps through the ((N−1)k + 1)-point grid. A coarse grid with a fine teacher did best at 1 step on the 2-D
    # data (benchmarks/short_recipes.py; README): here N = 10 with k = 4, 37 teacher points, about 2× a step's cost.
    "CD N=10, 4 teacher substeps, mean of weights": Arm("cd", N10_SUBSTEPS, 600, "teacher solver", CD),
    # mnist_cd's recipe with twice the batch (128, 2× a step's cost; at step 300 it has had the recipe's 600 steps'
    # compute) or twice the learning rate: with the mean of the weights as the evaluation average, does less
    # gradient noise, or a larger step whose noise the average takes out, move the 1-step plateau?
    "CD batch 128, N 6→18, mean of weights": Arm(
        "cd", [*MNIST_CD, "optim.batch_size=128"], 600, "batch size", CD, checkpoints=4
    ),
    "CD lr 4e-4, N 6→18, mean of weights": Arm(
        "cd", [*MNIST_CD, "optim.lr=4e-4"], 600, "learning rate", CD, checkpoints=4
    ),
    # the recipe with another seed: how far one run's end point moves (the arms above are one run each)
    "CD N 6→18, mean of weights, seed 1": Arm("cd", [*MNIST_CD, "train.seed=1"], 600, "seed", CD, checkpoints=2),
    # twice the learning rate reached the plateau sooner and stayed above the recipe's: half of it
    "CD lr 1e-4, N 6→18, mean of weights": Arm(
        "cd", [*MNIST_CD, "optim.lr=1e-4"], 600, "learning rate", CD, checkpoints=4
    ),
    # Dropout in the student (iCT used 0.3 and ECT 0.2 on CIFAR-10; the teacher had none): its online weights get worse
    # while their mean gets better; does regularising the student move the plateau?
    "CD dropout 0.1, N 6→18, mean of weights": Arm(
        "cd", [*MNIST_CD, "network.dropout=0.1"], 600, "dropout", CD, checkpoints=4
    ),
    "CD dropout 0.3, N 6→18, mean of weights": Arm(
        "cd", [*MNIST_CD, "network.dropout=0.3"], 600, "dropout", CD, checkpoints=4
    ),
    # A perceptual distance that needs no downloaded weights: LPIPS's form on the teacher's own encoder, which sees the
    # images at σ = cd.feature_sigma (nets/denoiser_features.py). In the paper's ablations LPIPS beat l2 and l1 for CD
    # (reference.md §4); here at σ ≈ σ_data and at 4× it.
    "CD teacher features σ 0.5, N 6→18, mean of weights": Arm(
        "cd", [*MNIST_CD, "cd.distance=teacher-features", "cd.feature_sigma=0.5"], 600, "distance", CD, checkpoints=3
    ),
    "CD teacher features σ 2, N 6→18, mean of weights": Arm(
        "cd", [*MNIST_CD, "cd.distance=teacher-features", "cd.feature_sigma=2"], 600, "distance", CD, checkpoints=3
    ),
    # A GAN term beside CD's L2 (CTM adds one to consistency training; LADD builds the discriminator from the teacher):
    # heads on the teacher's frozen encoder tell the student's outputs from real images, and the student's term is
    # matched to the CD loss's gradient at its last layer (training/adversarial.py). λ = 1: equal pull.
    "CD adversarial λ 1, N 6→18, mean of weights": adversarial_arm(1, "pairs"),
    "CD adversarial λ 3, N 6→18, mean of weights": adversarial_arm(3, "pairs"),
    # The discriminator judging the student's one-step samples f_θ(σ_max·z, σ_max), the 1-step model itself, instead
    # of its outputs on CD's pairs
    "CD adversarial λ 1 on one-step samples, N 6→18, mean of weights": adversarial_arm(1, "one-step"),
    # three times the pull on the one-step samples (on the pairs, λ = 3 was worse than λ = 1 everywhere)
    "CD adversarial λ 3 on one-step samples, N 6→18, mean of weights": adversarial_arm(3, "one-step"),
    # iCT from scratch with dropout (0.3 in the iCT paper on CIFAR-10; mnist_ict has none) against the same 1760 steps
    # without: the newest checkpoint within the teacher's time that the from-scratch goal counts
    "iCT 1760 steps": Arm("ict", [], 1760, "dropout", checkpoints=2),
    "iCT 1760 steps, dropout 0.3": Arm("ict", ["network.dropout=0.3"], 1760, "dropout", checkpoints=2),
    "ECT mean of weights": Arm("ect", ["train.ema_power=0"], 600, "EMA rate", "ect.teacher", checkpoints=3),
    "CD online weights": Arm(
        "cd",
        [],
        600,
        "EMA rate",
        CD,
        run="CD",
        weights="online",
        note="the bundled CD run's online weights: no evaluation EMA",
    ),
    # Network size: a teacher at half and at twice the small preset's width (3400 steps, as runs/mnist-teacher) and CD
    # from each; a student starts from its teacher's weights, so it takes the teacher's network.
    "Teacher half width": Arm("teacher", ["network.preset=small-half"], 3400, "network size", checkpoints=1),
    "CD half width": Arm("cd", MNIST_CD, 600, "network size", CD, teacher_arm="Teacher half width"),
    "Teacher twice width": Arm("teacher", ["network.preset=small-twice"], 3400, "network size", checkpoints=1),
    "CD twice width": Arm("cd", MNIST_CD, 600, "network size", CD, teacher_arm="Teacher twice width", checkpoints=3),
    # ECT from scratch: ECT's first stage is diffusion pretraining (Δt = t, ECT paper §3), here the teacher's own
    # recipe for 2400 of its 3400 steps, then ECT's tuning from it. No trained teacher is used: the two stages'
    # minutes are added on one axis, they stay within the teacher's 69, and the ratios are to the full teacher.
    "ECT from scratch, diffusion stage": Arm("teacher", [], 2400, "from scratch", checkpoints=1),
    "ECT from scratch": Arm(
        "ect", [], 600, "method", "ect.teacher", teacher_arm="ECT from scratch, diffusion stage", first_stage=True
    ),
    # CT's former bundled recipe, for issue 13's deliverable 3.
    "CT-former": Arm("ct", ["ct.s1=40", "ct.mu0=0.95", "ct.distance=l2", "ct.weighting=uniform"], 800, "CT recipe"),
    # CT's learning rate: on the 2-D data 4× toy_ct's former rate lowered the 1-step MMD for every seed
    # (docs/results/curves, "The demo's 2-D CD and CT"); does 3× mnist_ct's former 4e-4 do the same on images? Both on
    # the second ruler, checkpointed at 400 and 800. It did: mnist_ct now takes 1.2e-3.
    "CT, 800 steps": Arm("ct", ["optim.lr=4e-4"], 800, "CT learning rate", checkpoints=2),
    "CT lr 1.2e-3, 800 steps": Arm("ct", ["optim.lr=1.2e-3"], 800, "CT learning rate", checkpoints=2),
    # The same question for iCT (mnist_ict: lr 4e-4), at the same 800 steps; on the 2-D data higher rates were mixed.
    "iCT, 800 steps": Arm("ict", ["optim.lr=4e-4"], 800, "CT learning rate", checkpoints=2),
    "iCT lr 1.2e-3, 800 steps": Arm("ict", ["optim.lr=1.2e-3"], 800, "CT learning rate", checkpoints=2),
    # The lowest 2-step point at the searched σ on the second ruler is N = 10 with 4 teacher substeps at step 600 (48.6
    # CPU-minutes), still falling there: the same run for 800 steps stays within the teacher's 71.5 CPU-minutes.
    "CD N=10, 4 teacher substeps, mean of weights, 800 steps": Arm("cd", N10_SUBSTEPS, 800, "training length", CD),
    # mnist_ct at its new rate for about the teacher's time (its bundled 3000 steps would take about 75 CPU-minutes,
    # more than the teacher's 71.5): does CT, like iCT, keep improving, and how far does it get at 2 steps?
    "CT 2600 steps": Arm("ct", ["optim.lr=1.2e-3"], 2600, "training length", checkpoints=4),
    # The two best 2-step runs at the searched σ together: N = 10 with 4 teacher substeps (at its plateau by step 600:
    # 800 steps were no better) with twice the batch (4 % lower than the recipe's batch at the searched σ), 480 steps,
    # about the teacher's 71.5 CPU-minutes. Does less gradient noise lower the substeps run's plateau?
    "CD N=10, 4 teacher substeps, batch 128, mean of weights": Arm(
        "cd", [*N10_SUBSTEPS, "optim.batch_size=128"], 480, "batch size", CD, checkpoints=4
    ),
}


# The CD arms that are whole recipes (the other CD arms change one setting of the reference for the ablations)
CD_RECIPES = (
    "CD",
    "CD N 6→18, 600 steps",
    "CD mean of weights",
    "CD N 6→18, mean of weights",
    "CD N 6→18, mean of weights, 1300 steps",
    "CD N 6→12, mean of weights",
    "CD N=10, 4 teacher substeps, mean of weights",
    "CD batch 128, N 6→18, mean of weights",
    "CD lr 4e-4, N 6→18, mean of weights",
    "CD lr 1e-4, N 6→18, mean of weights",
    "CD N 6→18, mean of weights, seed 1",
    "CD dropout 0.1, N 6→18, mean of weights",
    "CD dropout 0.3, N 6→18, mean of weights",
    "CD N=10, 4 teacher substeps, mean of weights, 800 steps",
    "CD N=10, 4 teacher substeps, batch 128, mean of weights",
    "CD teacher features σ 0.5, N 6→18, mean of weights",
    "CD teacher features σ 2, N 6→18, mean of weights",
    "CD adversarial λ 1, N 6→18, mean of weights",
    "CD adversarial λ 3, N 6→18, mean of weights",
    "CD adversarial λ 1 on one-step samples, N 6→18, mean of weights",
    "CD adversarial λ 3 on one-step samples, N 6→18, mean of weights",
)
CT_FAMILY = (
    "CT",
    "iCT",
    "iCT 2200 steps",
    "iCT 1760 steps",
    "iCT 1760 steps, dropout 0.3",
    "sCT",
    "CT, 800 steps",
    "CT lr 1.2e-3, 800 steps",
    "iCT, 800 steps",
    "iCT lr 1.2e-3, 800 steps",
    "CT 2600 steps",
)
TWO_STEPS = (2, SEARCHED)  # 2 steps at the default σ's or at the searched ones
# Issue 13's goals: (what, arms it may come from (None: any), scores entries, largest ratio to the teacher's best)
GOALS = [
    ("best 1-step model", None, (1,), 1.5),
    ("best 2-step model", None, TWO_STEPS, 1.15),
    ("CD at 1 step", CD_RECIPES, (1,), 1.7),
    ("best of CT / iCT / sCT at 2 steps (no teacher)", CT_FAMILY, TWO_STEPS, 2.0),
    (
        "the same for any method without a trained teacher (ECT from scratch too)",
        (*CT_FAMILY, "ECT from scratch"),
        TWO_STEPS,
        2.0,
    ),
]
