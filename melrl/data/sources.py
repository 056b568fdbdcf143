"""Where the registered datasets' files come from: for each file, the public repository, the full commit, the path
in it, the size and sha256 of the file at that commit, and its licence. A download is kept only when it matches.

Every checksum here was computed from the file at the pinned commit of the public repository.
"""

from __future__ import annotations

from dataclasses import dataclass

PUBLIC_HOST = "https://raw.githubusercontent.com"  # serves <owner>/<repo>/<commit>/<path>


@dataclass(frozen=True)
class PinnedFile:
    file: str  # where it lives in the data folder
    repo: str  # owner/name of the public repository
    commit: str  # full commit hash
    path: str  # path in the repository
    size: int  # bytes
    sha256: str
    rows: int  # rows in the file (the loader may leave some out: see melrl.data.loaders)
    licence: str

    @property
    def source(self) -> str:
        return f"{self.repo}@{self.commit}:{self.path}"

    def url(self, base: str = PUBLIC_HOST) -> str:
        """The raw file at the pinned commit, from the public host or from a mirror with the same layout."""
        return f"{base.rstrip('/')}/{self.repo}/{self.commit}/{self.path}"


_QWEN_MATH = "QwenLM/Qwen2.5-Math", "a45202bd16f1ec06f433442dc1152d0074773465"
_QWEN_MATH_LICENCE = "MIT (evaluation/LICENSE of QwenLM/Qwen2.5-Math)"
_GSM8K = "openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c"
_SIMPLERL = "hkust-nlp/simpleRL-reason"

DAPO_MATH_17K = PinnedFile(
    "dapo_math_17k/train.parquet", "MasterVito/SvS", "9fd8f35375b31b8632b52e715296c264a3ad4176",
    "data/dapo_math_17k.parquet", 2_773_999, "246ae23df97c9eae8126cb4da780e9a0a31d10110e16eed144bcecbf2132d535",
    17_917, "Apache-2.0 (MasterVito/SvS; the dataset BytedTsinghua-SIA/DAPO-Math-17k is Apache-2.0 too)",
)
MATH_LVL3TO5 = PinnedFile(
    "math_train_lvl3to5/train.parquet", _SIMPLERL, "bdc9f803c8e0dd749e1aa778d40d012626b01ff6",
    "train.parquet", 3_805_836, "a6ce0b30da9d3be80b0bd8b2925c8707aec6f627af3628c5439241a3b22e7c13",
    8_523, "MIT",
)
GSM8K_TRAIN = PinnedFile(
    "gsm8k/train.jsonl", *_GSM8K, "grade_school_math/data/train.jsonl",
    4_166_206, "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465", 7_473, "MIT",
)
GSM8K_TEST = PinnedFile(
    "gsm8k/test.jsonl", *_GSM8K, "grade_school_math/data/test.jsonl",
    749_738, "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14", 1_319, "MIT",
)
AIME24 = PinnedFile(
    "aime24/test.jsonl", *_QWEN_MATH, "evaluation/data/aime24/test.jsonl",
    156_944, "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac", 30, _QWEN_MATH_LICENCE,
)
# Five problems have broken LaTeX upstream; the loader repairs them (melrl.data.repairs), the file stays as pinned.
AIME25 = PinnedFile(
    "aime25/test.jsonl", "inclusionAI/AReaL", "f55fe685c661b0117d888fcae47d6f46e9a85087",
    "evaluation/data/aime25/test.jsonl", 15_813, "b4e273c02d3e7fe1b74b59eae768fc8230bfb0f79539890cb56f4361caac0331",
    30, "Apache-2.0",
)
AMC23 = PinnedFile(
    "amc23/test.jsonl", *_QWEN_MATH, "evaluation/data/amc23/test.jsonl",
    27_631, "43707e1ca784602d8479de24ee8ce36609dbebc46dd152b0b12a46611aa898a4", 40, _QWEN_MATH_LICENCE,
)
MATH500 = PinnedFile(
    "math500/test.jsonl", _SIMPLERL, "cf1c7858bfc145a27aa733e75d930d34f0d318a6",
    "examples/simplelr_math_eval/data/math500/test.jsonl",
    446_564, "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132", 500, "MIT",
)
OLYMPIADBENCH = PinnedFile(
    "olympiadbench/test.jsonl", *_QWEN_MATH, "evaluation/data/olympiadbench/test.jsonl",
    1_493_870, "bb8c1e38a16ea9eacb77530315a674d883f267fbff79183effc53681b4fcc416", 675,
    _QWEN_MATH_LICENCE + "; the OpenBMB/OlympiadBench repository names no licence",
)
MINERVA_MATH = PinnedFile(
    "minerva_math/test.jsonl", *_QWEN_MATH, "evaluation/data/minerva_math/test.jsonl",
    247_267, "0e656b430d3a0a1dab6aa853f453ba3805e28e2cabe4fc72486a897cc09d8ba2", 272, _QWEN_MATH_LICENCE,
)


# name -> split -> file; a dataset's first split is its default one
REGISTERED: dict[str, dict[str, PinnedFile]] = {
    "dapo_math_17k": {"train": DAPO_MATH_17K},
    "math_lvl3to5": {"train": MATH_LVL3TO5},
    "gsm8k": {"train": GSM8K_TRAIN, "test": GSM8K_TEST},
    "aime24": {"test": AIME24},
    "aime25": {"test": AIME25},
    "amc23": {"test": AMC23},
    "math500": {"test": MATH500},
    "olympiadbench": {"test": OLYMPIADBENCH},
    "minerva_math": {"test": MINERVA_MATH},
}
