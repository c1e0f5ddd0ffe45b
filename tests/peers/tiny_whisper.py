"""A tiny random-weight CTranslate2 Whisper, built here with numpy only (no torch, no hub).

faster-whisper loads it and runs the whole real path (features, encoder, greedy decoding,
tokenizer) in a fraction of a second; the text is random bytes, so tests assert types and flow,
never words. Transcribe it with ``TINY_OPTIONS``: the defaults fall back through six
temperatures x 448 tokens (~10 s a call) and may give an empty transcript.
Recipe: ../shared/reference/audio-recipes.md §2 (route A).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["TINY_OPTIONS", "make_tiny_whisper"]

# Only byte tokens may be decoded (the specials and timestamps, ids 256.., are suppressed): random
# weights otherwise often emit a timestamp or the end first, and the transcript is empty.
TINY_OPTIONS = {"temperature": 0.0, "max_new_tokens": 16, "suppress_tokens": list(range(256, 256 + 9 + 1501))}
SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character map (what a byte-level BPE vocabulary is made of)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def make_tiny_whisper(out_dir: Path, *, d: int = 64, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """Write a random English-only Whisper (d_model ``d``) to ``out_dir`` (~1.7 MB, ~0.05 s)."""
    from ctranslate2.specs import whisper_spec
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    rng = np.random.default_rng(seed)
    n_mels = 80

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    # the tokenizer: 256 byte tokens (ids 0..255), then the specials; timestamps follow in the vocabulary
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(_bytes_to_unicode().values())}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    tokens = [tk.id_to_token(i) for i in range(tk.get_vocab_size())]
    tokens += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    vocab, ffn = len(tokens), 2 * d

    def norm(s) -> None:
        s.gamma, s.beta = np.ones(d, np.float32), np.zeros(d, np.float32)

    def linear(s, o: int, i: int) -> None:
        s.weight, s.bias = rand(o, i), np.zeros(o, np.float32)

    def feed_forward(s) -> None:
        norm(s.layer_norm)
        linear(s.linear_0, ffn, d)
        linear(s.linear_1, d, ffn)

    spec = whisper_spec.WhisperSpec(layers, heads, layers, heads)
    enc = spec.encoder
    enc.conv1.weight, enc.conv1.bias = rand(d, n_mels, 3), np.zeros(d, np.float32)
    enc.conv2.weight, enc.conv2.bias = rand(d, d, 3), np.zeros(d, np.float32)
    enc.position_encodings.encodings = rand(1500, d)
    norm(enc.layer_norm)
    for layer in enc.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d)
        feed_forward(layer.ffn)
    dec = spec.decoder
    dec.embeddings.weight = rand(vocab, d)
    dec.position_encodings.encodings = rand(448, d)
    norm(dec.layer_norm)
    dec.projection.weight = dec.embeddings.weight
    for layer in dec.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d)
        norm(layer.attention.layer_norm)
        linear(layer.attention.linear[0], d, d)
        linear(layer.attention.linear[1], 2 * d, d)
        linear(layer.attention.linear[2], d, d)
        feed_forward(layer.ffn)
    eot = tk.token_to_id("<|endoftext|>")
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [eot]
    spec.config.lang_ids = []
    spec.config.alignment_heads = [[layers - 1, h] for h in range(heads)]
    spec.register_vocabulary(tokens)
    spec.validate()
    spec.optimize(quantization=None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))
    tk.save(str(out / "tokenizer.json"))  # without it faster-whisper would fetch one from the hub
    features = {"feature_size": n_mels, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400}
    (out / "preprocessor_config.json").write_text(json.dumps(features))
    return out
