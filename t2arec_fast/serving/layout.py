"""The flat float32 vector that the state cache holds for one user: a small header, every block's conv window and
SSM state, and the last output o_n (docs/serving.md, "Where a user's data lives")."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

from t2arec_fast.model.block import BlockState

__all__ = ["StateLayout", "LAYOUT_VERSION", "HEADER_WORDS", "int64_to_words", "words_to_int64"]

# Header words (float32, each an exact small integer so that it survives a float16 cache and is never NaN):
#   [0] layout version   [1] header length in words   [2] flags (0; reserved, e.g. "adapted by the test-time step")
#   [3] reserved (0)     [4:12] event count, int64     [12:20] last timestamp, int64
# An int64 is stored as its 8 little-endian BYTES, one byte (0..255) per float32 word. A plain bit-cast (two
# float32 words per int64) is NOT used: unix times in 2037-2038 or after 2106 make a word that is a NaN pattern,
# which the cache refuses, and a float16 cache would destroy the bits. Bytes round-trip exactly in either dtype.
LAYOUT_VERSION = 1
HEADER_WORDS = 20
_H_VERSION, _H_LENGTH, _H_EVENTS, _H_LAST_TS = 0, 1, slice(4, 12), slice(12, 20)


def int64_to_words(values: np.ndarray) -> np.ndarray:
    """(m,) int64 → (m, 8) float32: the little-endian bytes of each value, one byte per word (exact)."""
    return np.ascontiguousarray(values, dtype="<i8").view(np.uint8).reshape(-1, 8).astype(np.float32)


def words_to_int64(words: np.ndarray) -> np.ndarray:
    """Inverse of `int64_to_words`: (m, 8) float words holding bytes → (m,) int64."""
    return np.ascontiguousarray(np.asarray(words).astype(np.uint8)).view("<i8").reshape(-1).astype(np.int64)


class StateLayout:
    """Where each piece of one user's state lives in the flat float32 vector that the cache stores.

        [ header (HEADER_WORDS) | block 0: conv (k−1)·(d+2n) | block 0: ssm n·d | block 1 ... | o_n (d) ]

    conv is BlockState.conv (k−1, d+2n) row-major (oldest input first); ssm is BlockState.ssm (n, d) row-major.
    The header does not depend on the model, so any layout version can be recognised before its body is read.
    conv_shapes, ssm_shapes: per block, without the batch axis; d: the width of o_n. `size`: floats per user.
    Source: docs/serving.md, "The flat state vector".
    """

    def __init__(self, conv_shapes: Sequence[Tuple[int, int]], ssm_shapes: Sequence[Tuple[int, int]], d: int):
        self.conv_shapes, self.ssm_shapes, self.d = list(conv_shapes), list(ssm_shapes), d
        self._blocks = []                                   # (conv slice, ssm slice) per block
        at = HEADER_WORDS
        for conv, ssm in zip(self.conv_shapes, self.ssm_shapes):
            conv_end = at + conv[0] * conv[1]
            ssm_end = conv_end + ssm[0] * ssm[1]
            self._blocks.append((slice(at, conv_end), slice(conv_end, ssm_end)))
            at = ssm_end
        self._output = slice(at, at + d)
        self.size = at + d

    @classmethod
    def for_model(cls, model) -> "StateLayout":
        """The layout of a `StepModel`'s state (read from its empty state)."""
        states = model.empty_states(1, device="cpu", dtype=torch.float32)
        return cls([tuple(s.conv.shape[1:]) for s in states], [tuple(s.ssm.shape[1:]) for s in states], model.width)

    def describe(self) -> dict:
        """The layout as JSON-able numbers (saved in serving.json; a load compares it with the model's)."""
        return {"layout_version": LAYOUT_VERSION, "header_words": HEADER_WORDS,
                "conv_shapes": [list(s) for s in self.conv_shapes], "ssm_shapes": [list(s) for s in self.ssm_shapes],
                "d": self.d, "size": self.size}

    def views(self, flat: torch.Tensor) -> Tuple[List[BlockState], torch.Tensor]:
        """Block states and o_n as VIEWS of flat (m, size): writing into them writes the flat buffer."""
        m = flat.shape[0]
        states = [BlockState(flat[:, cs].view(m, *conv), flat[:, ss].view(m, *ssm))
                  for (cs, ss), conv, ssm in zip(self._blocks, self.conv_shapes, self.ssm_shapes)]
        return states, flat[:, self._output]

    def pack(self, states: List[BlockState], o: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Copy block states and o_n (m, d) into the body of out (m, size); the header is left alone."""
        views, o_view = self.views(out)
        for view, st in zip(views, states):
            view.conv.copy_(st.conv)
            view.ssm.copy_(st.ssm)
        o_view.copy_(o)
        return out

    @staticmethod
    def write_header(flat: np.ndarray, n_events: np.ndarray, last_ts: np.ndarray) -> None:
        """Fill the header of flat (m, size) float32 numpy in place."""
        flat[:, :HEADER_WORDS] = 0.0
        flat[:, _H_VERSION] = LAYOUT_VERSION
        flat[:, _H_LENGTH] = HEADER_WORDS
        flat[:, _H_EVENTS] = int64_to_words(n_events)
        flat[:, _H_LAST_TS] = int64_to_words(last_ts)

    @staticmethod
    def read_header(flat: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """→ (readable bool (m,), n_events int64 (m,), last_ts int64 (m,)); unreadable rows hold garbage counts."""
        readable = (flat[:, _H_VERSION] == LAYOUT_VERSION) & (flat[:, _H_LENGTH] == HEADER_WORDS)
        return readable, words_to_int64(flat[:, _H_EVENTS]), words_to_int64(flat[:, _H_LAST_TS])

