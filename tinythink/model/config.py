"""Model configuration: one dataclass for the Llama family (SmolLM2, Llama 3.x, Qwen2/2.5).

Every layer may have its own attention width and MLP width, because a pruned model keeps different
amounts of each layer. Uniform models leave `layer_shapes` as None.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class LayerShape:
    n_heads: int
    n_kv_heads: int
    intermediate_size: int


@dataclass
class ModelConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    head_dim: int = 0  # 0: dim // n_heads
    max_seq_len: int = 2048  # the model's trained context length
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # Hugging Face form, e.g. {"rope_type": "llama3", "factor": 8.0, ...}
    norm_eps: float = 1e-5
    attention_bias: bool = False  # Qwen2 puts biases on q, k and v
    tie_embeddings: bool = True
    arch: str = "llama"  # "llama" or "qwen2": the Hugging Face model_type to export as
    quantization: dict | None = None  # {"bits": 8 or 4, "group_size": ...} for weight-only quantized linears
    layer_shapes: tuple[LayerShape, ...] | None = field(default=None)

    def __post_init__(self):
        if self.head_dim == 0:
            self.head_dim = self.dim // self.n_heads
        if self.layer_shapes is not None:
            self.layer_shapes = tuple(LayerShape(**s) if isinstance(s, dict) else s for s in self.layer_shapes)
            if len(self.layer_shapes) != self.n_layers:
                raise ValueError(f"layer_shapes has {len(self.layer_shapes)} entries for {self.n_layers} layers")
            if all(s == self.layer_shapes[0] for s in self.layer_shapes) and self.layer_shapes[0] == self._uniform():
                self.layer_shapes = None
        for i in range(self.n_layers):
            s = self.layer(i)
            if s.n_kv_heads <= 0 or s.n_heads % s.n_kv_heads:
                raise ValueError(f"layer {i}: {s.n_heads} query heads is not a multiple of {s.n_kv_heads} KV heads")

    def _uniform(self) -> LayerShape:
        return LayerShape(self.n_heads, self.n_kv_heads, self.intermediate_size)

    def layer(self, i: int) -> LayerShape:
        return self.layer_shapes[i] if self.layer_shapes is not None else self._uniform()

    @property
    def uniform(self) -> bool:
        return self.layer_shapes is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return replace(PRESETS[name], **overrides)


PRESETS: dict[str, ModelConfig] = {
    "smollm2-135m": ModelConfig(
        vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, intermediate_size=1536,
        max_seq_len=8192, rope_theta=100000.0, norm_eps=1e-5,
    ),
    "smollm2-360m": ModelConfig(
        vocab_size=49152, dim=960, n_layers=32, n_heads=15, n_kv_heads=5, intermediate_size=2560,
        max_seq_len=8192, rope_theta=100000.0, norm_eps=1e-5,
    ),
    "qwen2.5-0.5b": ModelConfig(
        vocab_size=151936, dim=896, n_layers=24, n_heads=14, n_kv_heads=2, intermediate_size=4864,
        max_seq_len=32768, rope_theta=1000000.0, norm_eps=1e-6, attention_bias=True, arch="qwen2",
    ),
    "llama-3.2-1b": ModelConfig(
        vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, intermediate_size=8192,
        max_seq_len=131072, rope_theta=500000.0, norm_eps=1e-5,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
    ),
}
