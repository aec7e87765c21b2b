"""A frozen bottom: the embeddings and the first N transformer layers of an encoder, trained by no regime
(``frozen_layers=N``), whose output is computed once per distinct sequence and kept in memory.

Where nothing below layer N trains, every phase and every evaluation that reads the same text through the
same bottom gets the same states there, so only the layers above need to run: on a CPU this is most of
the cost of training and scoring a module on the top layers. Within ``cached_bottom(model, N)`` each
encoder of ``model`` reads its embedding output from a ``CachedBottom``, which runs the real embeddings and
bottom layers (in eval mode, without gradients: frozen layers run without dropout here) for the sequences
it has not seen, and the encoder's layer list holds only the layers above N. The states are keyed by
everything that changes them: the bottom's content (a hash of its parameters, dtype included), the autocast
it runs under (a bf16 phase never reads an fp32 phase's states, nor the reverse), the attention
implementation, and each sequence's real tokens with its token type and position ids where the caller
passes them. So a cache is shared by every model whose bottom is byte-identical (the backbone's, when
regimes place no module there) run alike, and never by one whose bottom differs. Pad positions read zeros:
the layers above mask them out of attention.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from contextlib import contextmanager

import torch

from .compat import layer_mask, layer_states
from .errors import UserError
from .modeling import encoders

STORE_BYTES = 4 << 30  # states kept at most, over all bottoms; the least recently used go first
BATCH = 32  # sequences per batch when a bottom computes the states it lacks


class _Store:
    """{(bottom hash, how it runs, one sequence's inputs): states} in least-recently-used order, within
    STORE_BYTES."""

    def __init__(self, limit: int):
        self.rows, self.bytes, self.limit = OrderedDict(), 0, limit

    def get(self, key):
        states = self.rows.get(key)
        if states is not None:
            self.rows.move_to_end(key)
        return states

    def clear(self) -> None:
        self.rows, self.bytes = OrderedDict(), 0

    def put(self, key, states: torch.Tensor) -> None:
        self.rows[key] = states
        self.bytes += states.nbytes
        while self.bytes > self.limit and len(self.rows) > 1:
            self.bytes -= self.rows.popitem(last=False)[1].nbytes


STORE = _Store(STORE_BYTES)


def check_count(layers: int, total: int) -> None:
    """``frozen_layers`` must leave at least one of ``total`` layers to train."""
    if not 0 <= layers < total:
        raise UserError(f"frozen_layers={layers}: the encoder has {total} layers; allowed 0..{total - 1}")


def check_layers(model, layers: int) -> None:
    for base in encoders(model):
        check_count(layers, len(base.encoder.layer))


def freeze_bottom(model, layers: int) -> None:
    """No parameter of the embeddings or of the first ``layers`` transformer layers trains."""
    if not layers:
        return
    check_layers(model, layers)
    for base in encoders(model):
        for module in (base.embeddings, *base.encoder.layer[:layers]):
            module.requires_grad_(False)


class CachedBottom(torch.nn.Module):
    """Stands in for an encoder's embeddings: returns the states after the bottom layers (see the module
    docstring). ``extend(attention_mask, embedded)`` turns a (rows, length) attention mask into the layers' mask."""

    def __init__(self, embeddings, layers: torch.nn.ModuleList, extend, padding_idx: int, attention: str | None):
        super().__init__()
        self.embeddings, self.layers, self.extend, self.padding_idx = embeddings, layers, extend, padding_idx
        self.key = (_content_hash([*embeddings.parameters(), *layers.parameters(), *embeddings.buffers()]), attention)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, **kwargs):
        if input_ids is None:
            raise UserError("frozen_layers reads token ids; this forward passed embeddings instead")
        device = input_ids.device
        running = (*self.key, torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type))
        # one sequence: its real tokens, and its token types (all 0: as none given) and positions where passed
        sequences = []
        for row, ids in enumerate(input_ids):
            real = ids.ne(self.padding_idx)
            types = None if token_type_ids is None or not token_type_ids[row].any() else token_type_ids[row][real]
            positions = None if position_ids is None else position_ids[row][real]
            sequences.append(tuple(None if part is None else tuple(part.tolist()) for part in (ids[real], types,
                                                                                               positions)))
        # taken from the store before computing the rest, whose storing may evict some of them
        states = {seq: STORE.get((running, seq)) for seq in dict.fromkeys(sequences)}
        missing = [seq for seq, found in states.items() if found is None]
        if missing:
            states.update(zip(missing, self._compute(missing, running, device)))
        first = states[sequences[0]]
        out = first.new_zeros(*input_ids.shape, first.shape[-1]).to(device)
        for row, seq in enumerate(sequences):
            out[row, :len(seq[0])] = states[seq]
        return out

    @torch.no_grad()
    def _compute(self, sequences: list[tuple], running: tuple, device) -> list[torch.Tensor]:
        """The bottom's states of each sequence (real tokens only), batched by length, stored as computed."""
        modes = [module.training for module in (self.embeddings, self.layers)]
        self.embeddings.eval()
        self.layers.eval()
        states = {}
        order = sorted(sequences, key=lambda seq: len(seq[0]))
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            ids, types, positions = (self._padded([seq[part] for seq in batch], fill, device)
                                     for part, fill in ((0, self.padding_idx), (1, 0), (2, self.padding_idx)))
            hidden = self.embeddings(input_ids=ids, token_type_ids=types, position_ids=positions)
            extended = self.extend(ids.ne(self.padding_idx).long(), hidden)
            for layer in self.layers:
                hidden = layer_states(layer(hidden, extended))  # positional: adapters' layer hooks read args[1]
            for row, seq in enumerate(batch):
                states[seq] = hidden[row, :len(seq[0])].detach().clone()
                STORE.put((running, seq), states[seq])
        self.embeddings.train(modes[0])
        self.layers.train(modes[1])
        return [states[seq] for seq in sequences]

    @staticmethod
    def _padded(rows: list[tuple | None], fill: int, device) -> torch.Tensor | None:
        """Rows of ids right-padded with ``fill`` into one tensor; None where no row has any (token types or
        positions not passed: the embeddings make their own)."""
        if all(row is None for row in rows):
            return None
        longest = max(len(row) for row in rows if row is not None)
        out = torch.full((len(rows), longest), fill, dtype=torch.long, device=device)
        for index, row in enumerate(rows):
            if row is not None:  # a row without (all-zero token types) keeps the fill, 0
                out[index, :len(row)] = torch.tensor(row, dtype=torch.long)
        return out


@contextmanager
def cached_bottom(model, layers: int):
    """Within the block, every encoder of ``model`` reads its first ``layers`` layers from the cache and
    runs only the layers above (nothing changes with ``layers=0``); the model is whole again after it."""
    if not layers:
        yield model
        return
    check_layers(model, layers)
    saved = []
    for base in encoders(model):
        whole = base.encoder.layer
        saved.append((base, base.embeddings, whole))
        bottom = CachedBottom(base.embeddings, torch.nn.ModuleList(whole[:layers]), layer_mask(base),
                              base.embeddings.padding_idx, getattr(base.config, "_attn_implementation", None))
        base.embeddings, base.encoder.layer = bottom, torch.nn.ModuleList(whole[layers:])
    try:
        yield model
    finally:
        for base, embeddings, whole in saved:
            base.embeddings, base.encoder.layer = embeddings, whole


# id(tensor) -> (the tensor, weakly; its version counter and data pointer when hashed; its digest): a bottom
# entered again (a bank's host model for each module and split) is not hashed again while unchanged
_DIGESTS: dict[int, tuple[weakref.ref, tuple[int, int], bytes]] = {}


def _content_hash(tensors: list[torch.Tensor]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        digest.update(_tensor_digest(tensor))
    return digest.hexdigest()


def _tensor_digest(tensor: torch.Tensor) -> bytes:
    state = (tensor._version, tensor.data_ptr())  # an in-place change bumps the version; `.data =` moves the pointer
    known = _DIGESTS.get(id(tensor))
    if known is None or known[0]() is not tensor or known[1] != state:
        digest = hashlib.blake2b(str((tuple(tensor.shape), tensor.dtype)).encode(), digest_size=16)
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        key = id(tensor)
        known = _DIGESTS[key] = (weakref.ref(tensor, lambda _: _DIGESTS.pop(key, None)), state, digest.digest())
    return known[2]
