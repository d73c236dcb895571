"""The one per-layer record of the converter (``keras_convert``) and the rewriter (``rewrite``).

Both commands report, per layer they looked at, what it was (op, kernel or window, input
shape, precision), what replaced it (``strategy``: the rewrite strategy or the converter's
lowering) or why nothing did (``reason``), and the facts of that replacement. The rewriter
fills the op's position and the ops it added; the converter the WBMM table's sizes and
folds. Plain data: ``dataclasses.asdict`` gives the JSON the reports write.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerReport:
    name: str
    op: str                             # DEPTHWISE_CONV_2D / CONV_2D (rewriter), WBMM (converter)
    kernel: str                         # "7x7": the conv's kernel, or the WBMM window
    input_shape: list[int]
    precision: str = ""
    rewritten: bool = False             # replaced (the converter lowers every layer it reports)
    strategy: str | None = None         # the rewrite strategy, or the converter's lowering
    reason: str = ""                    # why that strategy, or why the layer was left alone
    # Rewriter: where the op sits and what replaced it.
    subgraph: int = 0
    op_index: int = -1
    padding: str = ""
    ops_added: int = 0
    float_island: bool = False          # an integer layer now computed in float32 (mixed precision)
    # Converter: the WBMM layer's deploy table.
    window: tuple[int, int] | None = None
    folded: list[str] = field(default_factory=list)
    table_bytes: int = 0                # compact float32 table (+ bias)
    dense_bytes: int = 0                # dense float32 M (+ bias)
    numpy_check: dict | None = None     # custom lowering without delegate: per-layer check of the stored op

    @property
    def lowering(self) -> str | None:
        """The converter's name for ``strategy``."""
        return self.strategy

    @property
    def channels(self) -> int:
        return int(self.input_shape[-1]) if self.input_shape else 0

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.input_shape[1], self.input_shape[2]) if len(self.input_shape) >= 3 else (0, 0)
