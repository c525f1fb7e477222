"""Exported graphs in ONNX Runtime with the PyTorch model's calling conventions (docs/onnx.md): `OnnxEncoder` runs
them, `OnnxStepModel` serves them (encode and step in ONNX Runtime, scoring in PyTorch) to `OnlineRecommender`.

States go in and come out as a list of `BlockState(conv, ssm)` (torch tensors, zero-copy views of ORT's output),
exactly as `T2ARec.encode` / `T2ARec.step` use them, so callers can switch between the two engines freely.
Every input is checked here, so a mistake reads as an `InputError` naming the problem, not an ORT traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model.base import check_left_padded
from t2arec_fast.model.block import BlockState

from . import graphs
from .metadata import model_version, state_shapes


class OnnxModelError(InputError):
    """An .onnx file that cannot be used: unreadable, corrupted, not ours, or not matching its siblings."""


def default_providers() -> List[str]:
    """ORT execution provider names: CUDA when this onnxruntime build has it, CPU always as the fallback."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def open_session(path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 spin: bool = True):
    """An ORT session with all graph optimisations, or an OnnxModelError that says what is wrong with the file.

    providers: ORT execution providers (default `default_providers()`); threads: intra-op threads (None: ORT's
    choice). spin=False stops ORT's worker threads from busy-waiting after each run: slightly slower at batch 1 on
    an idle machine, much better when the cores are shared with other work (PyTorch in the same process included).

    Raises:
        FileNotFoundError: no file at `path`.
        OnnxModelError: ONNX Runtime cannot load it (corrupted, not ONNX, or newer than this runtime); the message
            says how to re-export.
    """
    import onnxruntime as ort
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers or default_providers()))
    except Exception as exc:  # ORT raises pybind11 types (InvalidProtobuf, Fail, ...) with long messages
        raise OnnxModelError(f"{path}: ONNX Runtime {ort.__version__} cannot load it ({_short(exc)}). "
                             f"{_load_hint(str(exc))}") from None


def _short(exc: Exception, limit: int = 240) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _load_hint(message: str) -> str:
    message = message.lower()
    if "opset" in message or "ir version" in message:
        return "The runtime is older than the graph: re-export with the default opset (t2arec export --opset 17)."
    if "protobuf" in message or "no graph" in message:
        return "The file is corrupted or not an ONNX model: re-export it with `t2arec export CHECKPOINT --out DIR`."
    return "Re-export it with `t2arec export CHECKPOINT --out DIR` for this runtime."


class OnnxEncoder:
    """encode / step (/ step_topk) of an exported T2ARec in ONNX Runtime.

    directory: what `export_onnx` wrote (encode.onnx, step.onnx, step_topk.onnx; any non-empty subset).
    providers: ORT execution providers; default CUDA when available, else CPU. threads: intra-op threads
    (default: ORT's choice, one per physical core). spin: see `open_session`.
    Shapes: batch b, length L, width d; item ids int64 (0 = padding); states as `BlockState(conv (b, k−1, d + 2n),
    ssm (b, n, d))` per block, float32 (the dtype in the graphs' metadata); outputs are torch tensors on the CPU.

    Raises:
        FileNotFoundError: `directory` is missing or holds no graph.
        OnnxModelError: a graph cannot be loaded, is not a t2arec_fast graph, sits under another kind's name,
            comes from other weights than its siblings, lacks the state shapes in its metadata (exported by an
            older version), or has unexpected inputs/outputs.
    """

    def __init__(self, directory, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 spin: bool = True):
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: no such export directory")
        paths = {kind: directory / f"{kind}.onnx" for kind in graphs.GRAPH_KINDS}
        paths = {kind: p for kind, p in paths.items() if p.is_file()}
        if not paths:
            raise FileNotFoundError(f"{directory}: no exported graph in it (expected "
                                    f"{', '.join(k + '.onnx' for k in graphs.GRAPH_KINDS)})")
        self.directory = directory
        self.sessions = {kind: open_session(p, providers, threads, spin) for kind, p in paths.items()}
        self.metadata = self._read_metadata(paths)
        self.n_items = int(self.metadata["n_items"])
        self.d, self.d_state = int(self.metadata["d"]), int(self.metadata["d_state"])
        self.state_shapes = state_shapes(self.metadata)
        if self.state_shapes is None or "n_layers" not in self.metadata:
            raise OnnxModelError(f"{directory}: the graphs' metadata lacks the state shapes (exported by an older "
                                 "t2arec_fast): re-export them")
        self.n_layers, self.conv_kernel = int(self.metadata["n_layers"]), int(self.metadata["conv_kernel"])
        self.model_version = self.metadata["model_version"]
        self.dtype = np.dtype(self.metadata["dtype"])
        for kind, p in paths.items():
            self._check_signature(kind, p)

    # -- loading checks -------------------------------------------------------------------------------------------
    def _read_metadata(self, paths) -> dict:
        """Metadata of the graphs, which must all be t2arec_fast graphs of the same kind-as-named and model."""
        metas = {}
        for kind, session in self.sessions.items():
            meta = dict(session.get_modelmeta().custom_metadata_map)
            if meta.get("producer") != "t2arec_fast":
                raise OnnxModelError(f"{paths[kind]}: not a t2arec_fast export (no producer metadata)")
            if meta.get("kind") != kind:
                raise OnnxModelError(f"{paths[kind]}: holds a {meta.get('kind')!r} graph, not {kind!r}")
            metas[kind] = meta
        versions = {kind: m.get("model_version") for kind, m in metas.items()}
        if len(set(versions.values())) > 1:
            raise OnnxModelError(f"{self.directory}: graphs come from different models (model_version {versions}); "
                                 "export them together")
        return next(iter(metas.values()))

    def _check_signature(self, kind: str, path) -> None:
        session = self.sessions[kind]
        want_in, want_out = graphs.io_names(kind, self.n_layers)
        got_in = [i.name for i in session.get_inputs()]
        got_out = [o.name for o in session.get_outputs()]
        if got_in != want_in or got_out != want_out:
            raise OnnxModelError(f"{path}: unexpected inputs/outputs {got_in} → {got_out} for a {kind} graph of "
                                 f"{self.n_layers} block(s); it was written by another version: re-export it")

    @property
    def kinds(self) -> tuple:
        """The graph kinds found in the directory, e.g. ("encode", "step")."""
        return tuple(self.sessions)

    @property
    def providers(self) -> List[str]:
        """The execution providers ORT actually uses (in order of preference)."""
        return next(iter(self.sessions.values())).get_providers()

    # -- inference ------------------------------------------------------------------------------------------------
    def encode(self, item_ids):
        """item_ids (batch, L) left-padded ints (0 = padding) → (o_n (batch, d), [BlockState per block]).

        Raises:
            InputError: not a 2-D integer array, empty, ids outside [0, n_items], not left-padded, a row of padding
                only, or encode.onnx not exported.
        """
        ids = self._item_ids(item_ids, dim=2)
        out = self._run("encode", {graphs.ITEM_IDS: ids})
        return out[0], graphs.unflatten_states(out[1:])

    def step(self, item_ids_t, states):
        """One new item per user: item_ids_t (batch,) in [1, n_items] → (o (batch, d), new states).

        Raises:
            InputError: ids not 1-D integers in [1, n_items], states not one (conv, ssm) pair per block of the
                shapes above, or step.onnx not exported.
        """
        out = self._run("step", self._step_feeds(item_ids_t, states))
        return out[0], graphs.unflatten_states(out[1:])

    def step_topk(self, item_ids_t, states, k: int = 10):
        """step plus the k best items for the new o: → (o, new states, top_scores (batch, k) float32, top_items
        (batch, k) int64 model ids).

        Raises:
            InputError: as `step`, k not an integer in [1, n_items], or step_topk.onnx not exported.
        """
        o, new_states, _, top_scores, top_items = self._step_with_scores(item_ids_t, states, k)
        return o, new_states, top_scores, top_items

    def step_scores(self, item_ids_t, states):
        """step plus scores over all items for the new o: → (o, new states, scores (batch, n_items + 1) float32,
        column 0 = −inf).

        Raises:
            InputError: as `step`, or step_topk.onnx not exported.
        """
        o, new_states, scores, _, _ = self._step_with_scores(item_ids_t, states, 1)
        return o, new_states, scores

    def empty_states(self, batch: int) -> List[BlockState]:
        """The state of users with no history (stepping from it n times equals encoding the n items)."""
        dtype = _torch_dtype(self.dtype)
        return [BlockState(torch.zeros((batch, *conv), dtype=dtype), torch.zeros((batch, *ssm), dtype=dtype))
                for conv, ssm in self.state_shapes]

    def _step_with_scores(self, item_ids_t, states, k: int):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n_items:
            raise InputError(f"k must be an integer in [1, {self.n_items}], got {k!r}")
        feeds = self._step_feeds(item_ids_t, states, kind="step_topk")
        feeds[graphs.TOP_K] = np.array([k], dtype=np.int64)
        out = self._run("step_topk", feeds)
        n = 1 + 2 * self.n_layers
        return (out[0], graphs.unflatten_states(out[1:n]), *out[n:])

    def _run(self, kind: str, feeds: dict) -> List[torch.Tensor]:
        if kind not in self.sessions:
            raise InputError(f"{self.directory}: {kind}.onnx was not exported (have: {', '.join(self.kinds)})")
        return [torch.from_numpy(a) for a in self.sessions[kind].run(None, feeds)]

    # -- input checks ---------------------------------------------------------------------------------------------
    def _item_ids(self, item_ids, dim: int) -> np.ndarray:
        ids = _to_numpy(item_ids)
        if ids.ndim != dim or not np.issubdtype(ids.dtype, np.integer):
            want = "(batch, L)" if dim == 2 else "(batch,)"
            raise InputError(f"item ids must be an integer array {want}, got {ids.dtype} {ids.shape}")
        if ids.size == 0:
            raise InputError(f"empty batch: item ids have shape {ids.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        low = 0 if dim == 2 else 1
        if ids.min() < low or ids.max() > self.n_items:
            bad = np.argwhere((ids < low) | (ids > self.n_items))[0]
            raise InputError(f"item id {int(ids[tuple(bad)])} at {tuple(int(i) for i in bad)} is outside "
                             f"[{low}, {self.n_items}]" + (" (0 = padding)" if dim == 2 else ""))
        if dim == 2:
            check_left_padded(torch.from_numpy(ids))
        return ids

    def _step_feeds(self, item_ids_t, states, kind: str = "step") -> dict:
        ids = self._item_ids(item_ids_t, dim=1)
        tensors = self._state_arrays(states, batch=len(ids))
        names = graphs.io_names(kind, self.n_layers)[0]
        return {graphs.ITEM_IDS: ids, **dict(zip(names[1:], tensors))}

    def _state_arrays(self, states, batch: int) -> List[np.ndarray]:
        if len(states) != self.n_layers:
            raise InputError(f"states: expected {self.n_layers} block state(s), got {len(states)}")
        arrays = []
        for i, (st, block_shapes) in enumerate(zip(states, self.state_shapes)):
            pair = (st.conv, st.ssm) if isinstance(st, BlockState) else tuple(st)
            for name, tensor, shape in zip(("conv", "ssm"), pair, ((batch, *s) for s in block_shapes)):
                arr = np.ascontiguousarray(_to_numpy(tensor), dtype=self.dtype)
                if arr.shape != shape:
                    raise InputError(f"states[{i}].{name}: expected shape {shape}, got {arr.shape}")
                arrays.append(arr)
        return arrays


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class OnnxStepModel:
    """A T2ARec whose recurrent work (encode, step) runs in ONNX Runtime, for `OnlineRecommender(runtime="onnx")`.

    It implements `model.protocol.StepModel`, what serving uses of a model, with
    encode and step answered by the exported graphs and scoring (o · Eᵀ, one matmul) and saving by the PyTorch
    model the graphs were exported from. The graphs must come from that model (their metadata's model version is
    checked against its weights). Shapes and dtypes: `model.protocol.StepModel`; states live on the CPU.

    Raises:
        OnnxModelError: the model's readout does not export (it scores one step past o_n), the graphs come from
            other weights, encode.onnx or step.onnx is missing, or anything `OnnxEncoder` refuses.
        FileNotFoundError: as `OnnxEncoder`.
    """

    def __init__(self, model, onnx_dir, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        if not model.readout.exports:                    # export_onnx refuses such a model; say so here too
            raise OnnxModelError(f"readout={model.config.readout!r} scores one step past o_n: the graphs cannot")
        self.torch_model = model.eval()
        self.encoder = OnnxEncoder(onnx_dir, providers=providers, threads=threads)
        if self.encoder.model_version != model_version(model):
            raise OnnxModelError(f"{onnx_dir}: the graphs were exported from another model "
                                 f"(version {self.encoder.model_version}, this model {model_version(model)}); "
                                 "graphs exported before 2026-12-01 carry an older label: re-export them")
        missing = {"encode", "step"} - set(self.encoder.kinds)
        if missing:
            raise OnnxModelError(f"{onnx_dir}: serving needs {', '.join(sorted(missing))}.onnx as well")
        self.n_items, self.config = model.n_items, model.config
        self.id_maps = model.id_maps

    @property
    def width(self) -> int:
        return self.encoder.d

    @property
    def needs_request_time(self) -> bool:
        return False                                     # the graphs score o_n (readout "last")

    def to(self, device):
        """Itself, on the CPU only.

        Raises:
            OnnxModelError: a device other than the CPU (ONNX Runtime picks its own through the providers).
        """
        if torch.device(device).type != "cpu":
            raise OnnxModelError("runtime='onnx' keeps states on the host: use device='cpu' (ONNX Runtime still "
                                 "runs on CUDA when its CUDA provider is available)")
        return self

    def eval(self):
        return self

    def empty_states(self, batch: int, device=None, dtype=None) -> List[BlockState]:
        return self.encoder.empty_states(batch)

    def encode(self, item_ids, timestamps=None):
        o, states = self.encoder.encode(item_ids)
        return o, states

    def step(self, item_ids_t, states):
        return self.encoder.step(item_ids_t, states)

    def step_in_place(self, item_ids_t, states) -> torch.Tensor:
        """`step`, its new states copied into `states` (ONNX Runtime writes its own output buffers) → o (b, d)."""
        o, new_states = self.encoder.step(item_ids_t, states)
        for state, new in zip(states, new_states):
            state.conv.copy_(new.conv)
            state.ssm.copy_(new.ssm)
        return o

    def score_from(self, o: torch.Tensor) -> torch.Tensor:
        return self.torch_model.score_from(o)

    def scores_from_state(self, o_n: torch.Tensor, states: List[BlockState], last_times=None,
                          request_times=None) -> torch.Tensor:
        """Scores of o_n (b, d) → (b, n_items + 1); the states and times are not needed (readout "last")."""
        return self.torch_model.score_from(o_n)

    def state_dict(self) -> dict:
        """The weights of the PyTorch model the graphs come from (what a shared store fingerprints the model by)."""
        return self.torch_model.state_dict()

    def save(self, directory, id_maps=None, extra=None) -> None:
        """The PyTorch model's checkpoint (`T2ARec.save`); the graphs are not copied."""
        self.torch_model.save(directory, id_maps=id_maps, extra=extra)
