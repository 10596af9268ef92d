"""Generate golden test fixtures for the Rust (candle) re-implementation of FLUX.1.

What it makes (under ``nodes/tests/fixtures/``; only these paths are written, every run
overwrites them, the other fixtures are left alone):

* ``flux_pipeline/``   a whole tiny ``FluxPipeline`` (``save_pretrained``, safetensors,
                       float32): ``model_index.json``, ``transformer/`` (FLUX.1-dev style,
                       guidance embedding), ``vae/`` (the ``vae_16`` AutoencoderKL of
                       tools/make_fixtures.py, same weights), ``text_encoder/`` (CLIPTextModel),
                       ``text_encoder_2/`` (T5EncoderModel), ``tokenizer/`` (CLIP BPE) and
                       ``tokenizer_2/`` (T5 Unigram), both with a ``tokenizer.json``, and
                       ``scheduler/`` (FlowMatchEulerDiscreteScheduler with FLUX.1-dev's config).
                       No vocabulary can be downloaded, so both tokenizers are trained here on
                       a small fixed English corpus (``CORPUS`` below): ``tokenizers``' own
                       normalisers / pre-tokenizers split the text, a small BPE and a small
                       Unigram trainer in this file pick the vocabularies (``tokenizers``'
                       trainers break ties through hash maps and give other ids on every run),
                       and transformers' CLIPTokenizer / T5Tokenizer build the final
                       ``tokenizer.json`` from them.
* ``flux_schnell_transformer/``  the same transformer config without guidance embedding
                       (FLUX.1-schnell style), other weights.
* ``flux_golden.safetensors``    tokenization and both text encoders for three prompts, one
                       transformer forward with every intermediate (dev and schnell), the
                       flow-matching schedules the pipeline sets up, a whole ``FluxPipeline``
                       run (every step's latents and the RGB image) and a cache-dit DBCache run
                       next to the same run uncached. Its JSON metadata has every setting.
* ``README.md``        the FLUX section (between ``<!-- flux:begin -->`` and
                       ``<!-- flux:end -->``) is replaced, or appended when missing; the rest
                       of the file is kept. tools/make_fixtures.py rewrites README.md from
                       scratch, so run this script after it.

Everything runs on the CPU in float32 with one thread, fixed seeds and
``torch.use_deterministic_algorithms(True)``; running it twice gives byte-identical files.
Nothing is downloaded and no pretrained weights are used.

How to run (from the repository root)::

    python -m venv /work/.fixvenv
    /work/.fixvenv/bin/pip install -r tools/requirements-fixtures.txt
    /work/.fixvenv/bin/python tools/make_flux_fixtures.py
"""

from __future__ import annotations

import os

# Before anything imports tokenizers / transformers / cache_dit: single-threaded, offline, quiet.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["CACHE_DIT_LOG_LEVEL"] = "error"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.dont_write_bytecode = True  # importing make_fixtures must not leave tools/__pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (setup_determinism, write_safetensors, build_vae, ...)

import diffusers  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel  # noqa: E402
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from tokenizers import Regex, normalizers, pre_tokenizers  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast  # noqa: E402

import cache_dit  # noqa: E402
from cache_dit import DBCacheConfig  # noqa: E402

OUT = mf.OUT
PIPE_DIR = OUT / "flux_pipeline"
SCHNELL_DIR = OUT / "flux_schnell_transformer"
GOLDEN = OUT / "flux_golden.safetensors"
README = OUT / "README.md"
README_BEGIN, README_END = "<!-- flux:begin -->", "<!-- flux:end -->"

TRANSFORMER_CONFIG = dict(
    patch_size=1,
    in_channels=64,
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=8,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    guidance_embeds=True,
    axes_dims_rope=(2, 2, 4),
)
SCHNELL_CONFIG = dict(TRANSFORMER_CONFIG, guidance_embeds=False)
# FLUX.1-dev's scheduler/scheduler_config.json
DEV_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    base_shift=0.5,
    max_shift=1.15,
)
# FLUX.1-schnell's: no resolution-dependent shift
SCHNELL_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)

DEV_WEIGHT_SEED = 7000
SCHNELL_WEIGHT_SEED = 7100
CLIP_WEIGHT_SEED = 7200
T5_WEIGHT_SEED = 7300
FORWARD_INPUT_SEED = 7400
PIPE_NOISE_SEED = 7500
CD_NOISE_SEED = 7600
# Text encoders keep transformers' own init plus this much gaussian noise on every parameter
# (so no LayerNorm weight is exactly 1 and no bias exactly 0), as tools/make_fixtures.py does.
TEXT_WEIGHT_NOISE = 0.02
# Transformer re-init (every parameter): weights N(0, 1/fan_in), biases N(0, 0.1^2), the
# q/k RMSNorm weights N(1, 0.1^2). diffusers' default init leaves the RMSNorm weights at
# exactly 1; this keeps activations of order 1 through every block (max|out| about 4).
TRANSFORMER_BIAS_STD = 0.1
TRANSFORMER_NORM_STD = 0.1
# ... except that the columns of time_text_embed.timestep_embedder.linear_1 that read the
# sinusoid of frequency f (rad per timestep unit; f = exp(-ln(10000) * j / 128)) are scaled by
# min(1, TIMESTEP_FREQ_CUTOFF / f). A random model that reads the fast sinusoids at full
# weight jumps from step to step (cache-dit's relative residual diffs 0.3..2.2); a trained
# FLUX.1 responds smoothly to t, and with this damping the diffs are 0.09..0.26 like the real ones.
TIMESTEP_FREQ_CUTOFF = 0.002

CLIP_MAX_LENGTH = 77
MAX_SEQUENCE_LENGTH = 16
CLIP_BPE_TRAIN_VOCAB = 320  # alphabet + merges, before the ASCII fill-in and the two specials
T5_UNIGRAM_TRAIN_VOCAB = 200  # pieces kept by train_unigram (plus its alphabet)

HEIGHT = WIDTH = 16  # vae_16 has 2 down blocks: vae_scale_factor 2, so an 8x8 latent
PIPE_STEPS = 6
GUIDANCE = 3.5
FORWARD_TIMESTEP = 0.73  # what the pipeline passes: t / 1000
CD_STEPS = 12
# Relative residual diffs of this model are 0.09..0.26 uncached (see TIMESTEP_FREQ_CUTOFF);
# 0.15 caches every other step from the first eligible one on (5 of the 10), and every diff
# stays more than 0.01 away from it, so a re-implementation's float error cannot flip a decision.
CD_THRESHOLD = 0.15
CD_MIN_MARGIN = 0.005
CD_WARMUP = 2

SCHEDULE_CASES = [(4, 16), (6, 16), (28, 4096), (10, 1024), (50, 256)]
SCHNELL_SCHEDULE_STEPS = 4

PIPE_PROMPT = "a red fox in the snow"
LONG_PROMPT = (
    "a small grey mouse hides in the old barn while a white cat sleeps on a red sofa and two black "
    "dogs run along the sandy beach near a wooden house that stands near the rocky coast, a golden "
    "eagle flies over the snowy mountains, a herd of zebras crosses the wide river, a blue whale "
    "swims deep in the ocean, colorful flowers bloom in the spring meadow, a sleepy panda chews "
    "bamboo in the misty hills and the red fox jumps over the lazy brown dog in the quiet city at night"
)
PROMPTS = [PIPE_PROMPT, "", LONG_PROMPT]

# The tokenizers' training text: a few dozen plain sentences about animals, colours and places.
CORPUS = [
    "a red fox in the snow",
    "a brown bear walks through the green forest",
    "the blue bird sings on a tall tree",
    "a white cat sleeps on a red sofa",
    "two black dogs run along the sandy beach",
    "a small grey mouse hides in the old barn",
    "an orange tiger rests in the tall yellow grass",
    "a golden eagle flies over the snowy mountains",
    "a pink flamingo stands in a shallow lake",
    "the purple sky glows above the quiet city at night",
    "a green frog sits on a lily pad in the pond",
    "a herd of zebras crosses the wide river",
    "the silver fish swim in the cold blue sea",
    "a little brown owl watches the dark woods",
    "a red car drives down a busy street in paris",
    "a wooden house stands near the rocky coast",
    "snow falls on the small village in the valley",
    "a yellow duck floats on the calm water",
    "the horse runs across the open field at sunrise",
    "a fluffy white rabbit eats fresh carrots in the garden",
    "a gray wolf howls at the full moon",
    "colorful flowers bloom in the spring meadow",
    "an old lighthouse shines over the stormy ocean",
    "a sleepy panda chews bamboo in the misty hills",
    "a bright rainbow appears over the desert canyon",
    "the red fox jumps over the lazy brown dog",
    "a black and white penguin slides on the ice",
    "a busy market in tokyo at dusk",
    "a castle on a hill covered with green moss",
    "an elephant drinks water at the muddy river",
    "a tiny hummingbird hovers near a red flower",
    "a quiet library in london with tall shelves",
    "the deer stands still in the foggy forest",
    "a lion sleeps under a big tree in the savanna",
    "a blue whale swims deep in the ocean",
    "a snowy owl sits on a frozen branch",
    "golden leaves fall in the autumn park",
    "a camel walks through the hot sand dunes",
    "a colorful parrot talks in the jungle",
    "a cozy cabin by the lake in winter",
]
# Printable ASCII: every character gets a vocabulary entry (and, for CLIP, its "</w>" form),
# so text outside the corpus still tokenizes without <unk>.
BASE_ALPHABET = [chr(c) for c in range(33, 127)]

# CLIP's split regex, exactly as in openai/clip-vit-large-patch14's tokenizer.json and
# transformers' CLIPTokenizer.
CLIP_SPLIT_REGEX = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def meta_json(value) -> str:
    """Every metadata value is JSON (strings quoted) so readers can parse all of them alike."""
    return json.dumps(mf.json_safe(value), sort_keys=True)


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def clip_pre_tokenizer() -> tuple[normalizers.Normalizer, pre_tokenizers.PreTokenizer]:
    """CLIP's normaliser and pre-tokenizer (as in transformers' CLIPTokenizer)."""
    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_REGEX), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return normalizer, pre_tokenizer


def t5_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """T5's pre-tokenizer (as in transformers' T5Tokenizer)."""
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)]
    )


def word_counts(words) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    return sorted(counts.items())


def train_bpe(words: list[tuple[str, int]], vocab_size: int, suffix: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Plain BPE training (what tokenizers' BpeTrainer does, with deterministic tie-breaking).

    Every word is split into characters, the last one carrying ``suffix``; then, until the
    vocabulary has ``vocab_size`` entries, the most frequent adjacent pair (ties: the
    lexicographically smallest) is merged everywhere. tokenizers' own trainer breaks ties
    through a hash map, so its vocabulary ids and merge order change from run to run.
    """
    segs = [(list(w[:-1]) + [w[-1] + suffix], n) for w, n in words]
    alphabet = sorted({sym for seg, _ in segs for sym in seg})
    vocab = list(alphabet)
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size:
        pairs: dict[tuple[str, str], int] = {}
        for seg, n in segs:
            for a, b in zip(seg, seg[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda ab: (-pairs[ab], ab))
        merged = best[0] + best[1]
        merges.append(best)
        if merged not in vocab:
            vocab.append(merged)
        for k, (seg, n) in enumerate(segs):
            out, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segs[k] = (out, n)
    return vocab, merges


def train_unigram(words: list[tuple[str, int]], size: int, iterations: int = 5) -> list[tuple[str, float]]:
    """A small Viterbi-EM Unigram training (SentencePiece's idea, deterministic).

    Candidates: every substring (up to 10 characters) of the words that occurs at least twice,
    plus every single character; score = log(frequency / total). Each iteration segments
    every word with the best-scoring (Viterbi) path, re-scores the pieces by how often that
    path used them and keeps the ``size`` most used (all single characters stay). tokenizers'
    UnigramTrainer iterates over hash maps, so its scores differ from run to run (by up to 2e-4
    here) and so does the order of its pieces.
    """
    chars = sorted({c for w, _ in words for c in w})
    counts: dict[str, int] = {}
    for w, n in words:
        for i in range(len(w)):
            for j in range(i + 1, min(len(w), i + 10) + 1):
                counts[w[i:j]] = counts.get(w[i:j], 0) + n
    pieces = {p: c for p, c in counts.items() if c >= 2 or len(p) == 1}
    total = sum(pieces.values())
    scores = {p: math.log(c / total) for p, c in sorted(pieces.items())}
    for _ in range(iterations):
        used: dict[str, int] = {}
        for w, n in words:
            best = [(0.0, -1)] + [(-math.inf, -1)] * len(w)  # (score, start of last piece)
            for j in range(1, len(w) + 1):
                for i in range(max(0, j - 10), j):
                    p = w[i:j]
                    if p in scores and best[i][0] > -math.inf:
                        cand = best[i][0] + scores[p]
                        if cand > best[j][0]:
                            best[j] = (cand, i)
            j = len(w)
            while j > 0:
                i = best[j][1]
                used[w[i:j]] = used.get(w[i:j], 0) + n
                j = i
        keep = sorted(used, key=lambda p: (-used[p], p))[:size]
        keep = sorted(set(keep) | set(chars))
        total = sum(used.get(p, 0) + 1 for p in keep)  # +1: characters the path did not use
        scores = {p: math.log((used.get(p, 0) + 1) / total) for p in keep}
    return sorted(scores.items(), key=lambda ps: (-ps[1], ps[0]))


def train_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE shaped like openai's CLIP tokenizer, trained on CORPUS.

    The corpus goes through CLIP's normaliser and pre-tokenizer (tokenizers' components),
    then train_bpe with the "</w>" end-of-word suffix. The vocabulary is: the alphabet, the
    merged symbols in merge order, then every printable ASCII character and its "</w>" form
    not yet there, then ``<|startoftext|>`` and ``<|endoftext|>`` last (the EOS is the
    highest id, as in CLIP, so transformers' pooling by argmax(ids) and by first-EOS agree).
    transformers' ``CLIPTokenizer(vocab, merges)`` builds the normaliser, pre-tokenizer,
    decoder and post-processor itself, so its tokenizer.json is what transformers makes of CLIP.
    """
    normalizer, pre_tokenizer = clip_pre_tokenizer()
    words = word_counts(
        w for line in CORPUS for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))
    )
    trained, merges = train_bpe(words, CLIP_BPE_TRAIN_VOCAB, "</w>")
    vocab: dict[str, int] = {}
    for token in trained:
        vocab.setdefault(token, len(vocab))
    for c in BASE_ALPHABET:
        for token in (c, c + "</w>"):
            vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)
    assert tok.eos_token_id == len(vocab) - 1 == tok.pad_token_id == tok.unk_token_id
    assert tok.bos_token_id == len(vocab) - 2
    assert len(tok) == len(vocab)
    # the trained model segments the corpus without <unk>
    for line in CORPUS:
        assert tok.unk_token_id not in tok(line).input_ids[1:-1], line
    return tok


def train_t5_tokenizer() -> T5TokenizerFast:
    """A Unigram (SentencePiece-style) tokenizer shaped like T5's, trained on CORPUS.

    The corpus goes through T5's pre-tokenizer (tokenizers' WhitespaceSplit + Metaspace),
    then train_unigram. ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2 (score 0), the trained
    pieces by score, then every printable ASCII character not yet there (score: the lowest
    trained score minus 1). No sentinel ``<extra_id_*>`` tokens (extra_ids=0).
    transformers' ``T5Tokenizer(vocab)`` adds the pre-tokenizer, the Metaspace decoder and the
    post-processor that appends ``</s>``. There is no normaliser (the real T5 has
    SentencePiece's precompiled NFKC map); the vocabulary is case-sensitive.
    """
    pre_tokenizer = t5_pre_tokenizer()
    words = word_counts(w for line in CORPUS for w, _ in pre_tokenizer.pre_tokenize_str(line))
    trained = train_unigram(words, T5_UNIGRAM_TRAIN_VOCAB)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + trained
    floor = min(s for _, s in trained) - 1.0
    present = {p for p, _ in pieces}
    pieces += [(c, floor) for c in BASE_ALPHABET if c not in present]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert len(tok) == len(pieces)
    for line in CORPUS:
        assert tok.unk_token_id not in tok(line).input_ids, line
    return tok


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def build_transformer(config: dict, seed: int) -> FluxTransformer2DModel:
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:  # Linear weights [out, in]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            elif name.endswith(("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight")):
                p.copy_(1 + TRANSFORMER_NORM_STD * torch.randn(p.shape, generator=gen))
            else:
                assert name.endswith(".bias") and p.ndim == 1, name
                p.copy_(TRANSFORMER_BIAS_STD * torch.randn(p.shape, generator=gen))
        linear_1 = model.time_text_embed.timestep_embedder.linear_1
        half = linear_1.in_features // 2  # Timesteps(256, flip_sin_to_cos=True): [cos | sin]
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
        damping = torch.clamp(TIMESTEP_FREQ_CUTOFF / freqs, max=1.0).to(torch.float32)
        linear_1.weight.mul_(torch.cat([damping, damping])[None, :])
    model.eval()
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all() and not ((p == 0) | (p == 1)).any(), name
    return model


def add_noise(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(TEXT_WEIGHT_NOISE * torch.randn_like(p))


def build_clip(tok: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act="quick_gelu",
        projection_dim=32,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(CLIP_WEIGHT_SEED)
    model = CLIPTextModel(config)
    add_noise(model)
    return model.eval()


def build_t5(tok: T5TokenizerFast) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=0,
    )
    torch.manual_seed(T5_WEIGHT_SEED)
    model = T5EncoderModel(config)
    add_noise(model)
    return model.eval()


def check_modules_equal(a: torch.nn.Module, b: torch.nn.Module, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), what
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{what}: {k}"


def build_pipeline() -> FluxPipeline:
    tokenizer = train_clip_tokenizer()
    tokenizer_2 = train_t5_tokenizer()
    vae = mf.build_vae("vae_16")
    assert vae.config.scaling_factor == 0.3611 and vae.config.shift_factor == 0.1159
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**DEV_SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=build_clip(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=build_t5(tokenizer_2),
        tokenizer_2=tokenizer_2,
        transformer=build_transformer(TRANSFORMER_CONFIG, DEV_WEIGHT_SEED),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline() -> FluxPipeline:
    pipe = FluxPipeline.from_pretrained(PIPE_DIR)
    pipe.set_progress_bar_config(disable=True)
    for name in ["transformer", "vae", "text_encoder", "text_encoder_2"]:
        module = getattr(pipe, name)
        module.eval()
        assert all(p.dtype == torch.float32 for p in module.parameters()), name
    return pipe


def check_loaded(saved: FluxPipeline, loaded: FluxPipeline) -> None:
    for name in ["transformer", "vae", "text_encoder", "text_encoder_2"]:
        check_modules_equal(getattr(saved, name), getattr(loaded, name), name)
    public = lambda cfg: {k: v for k, v in dict(cfg).items() if not k.startswith("_")}  # noqa: E731
    assert public(saved.scheduler.config) == public(loaded.scheduler.config)
    for name in ["tokenizer", "tokenizer_2"]:
        a, b = getattr(saved, name), getattr(loaded, name)
        assert type(a) is type(b), (type(a), type(b))
        assert a.get_vocab() == b.get_vocab(), name
        assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str(), name
        for p in PROMPTS + ["Hello, World! 1234 zebra-crossing"]:
            assert a(p).input_ids == b(p).input_ids, (name, p)
    # the vae is tools/make_fixtures.py's vae_16, weight for weight
    if (OUT / "vae_16").is_dir():
        check_modules_equal(loaded.vae, AutoencoderKL.from_pretrained(OUT / "vae_16"), "vae vs vae_16/")


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def encoder_fixtures(pipe: FluxPipeline, tensors: dict, meta: dict) -> None:
    tok, tok2 = pipe.tokenizer, pipe.tokenizer_2
    for i, prompt in enumerate(PROMPTS):
        # exactly the calls of FluxPipeline._get_clip_prompt_embeds / _get_t5_prompt_embeds
        clip_ids = tok([prompt], padding="max_length", max_length=pipe.tokenizer_max_length, truncation=True,
                       return_overflowing_tokens=False, return_length=False, return_tensors="pt").input_ids
        t5_ids = tok2([prompt], padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True,
                      return_length=False, return_overflowing_tokens=False, return_tensors="pt").input_ids
        clip_out = pipe.text_encoder(clip_ids, output_hidden_states=False)
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(prompt=prompt, prompt_2=None,
                                                             max_sequence_length=MAX_SEQUENCE_LENGTH)
        assert torch.equal(pooled, clip_out.pooler_output)
        eos_pos = int((clip_ids[0] == tok.eos_token_id).nonzero()[0])
        assert eos_pos == int(clip_ids[0].argmax())
        assert torch.equal(pooled[0], clip_out.last_hidden_state[0, eos_pos])
        assert torch.equal(prompt_embeds, pipe.text_encoder_2(t5_ids)[0])
        assert torch.equal(text_ids, torch.zeros(MAX_SEQUENCE_LENGTH, 3))
        assert clip_ids.shape == (1, CLIP_MAX_LENGTH) and t5_ids.shape == (1, MAX_SEQUENCE_LENGTH)
        untruncated_clip = tok(prompt).input_ids
        untruncated_t5 = tok2(prompt).input_ids
        if prompt is LONG_PROMPT:
            assert len(untruncated_clip) > CLIP_MAX_LENGTH and len(untruncated_t5) > MAX_SEQUENCE_LENGTH
        else:
            assert len(untruncated_clip) <= CLIP_MAX_LENGTH and len(untruncated_t5) <= MAX_SEQUENCE_LENGTH
        tensors[f"clip_ids_{i}"] = clip_ids[0].to(torch.int64)
        tensors[f"t5_ids_{i}"] = t5_ids[0].to(torch.int64)
        tensors[f"clip_hidden_{i}"] = clip_out.last_hidden_state
        tensors[f"clip_pooled_{i}"] = pooled
        tensors[f"t5_hidden_{i}"] = prompt_embeds
        meta[f"clip_tokens_{i}"] = tok.convert_ids_to_tokens(untruncated_clip)
        meta[f"t5_tokens_{i}"] = tok2.convert_ids_to_tokens(untruncated_t5)
        meta[f"clip_untruncated_len_{i}"] = len(untruncated_clip)
        meta[f"t5_untruncated_len_{i}"] = len(untruncated_t5)
        meta[f"clip_eos_position_{i}"] = eos_pos
    meta["prompts"] = PROMPTS
    meta["clip_max_length"] = pipe.tokenizer_max_length
    meta["max_sequence_length"] = MAX_SEQUENCE_LENGTH
    meta["clip_vocab_size"] = len(tok)
    meta["clip_bos_id"] = tok.bos_token_id
    meta["clip_eos_id"] = tok.eos_token_id
    meta["clip_pad_id"] = tok.pad_token_id
    meta["clip_unk_id"] = tok.unk_token_id
    meta["clip_pooling"] = (
        "pooler_output = last_hidden_state (after final_layer_norm) at the first position where "
        "input_ids == eos_token_id (transformers' branch for eos_token_id != 2); the EOS is the highest "
        "id, so argmax(input_ids) gives the same position. No attention mask is passed (causal mask only)."
    )
    meta["t5_vocab_size"] = len(tok2)
    meta["t5_pad_id"] = tok2.pad_token_id
    meta["t5_eos_id"] = tok2.eos_token_id
    meta["t5_unk_id"] = tok2.unk_token_id
    meta["t5_notes"] = (
        "t5_hidden = T5EncoderModel(t5_ids)[0] (last_hidden_state after final_layer_norm), no attention "
        "mask (padding is attended to), as FluxPipeline does."
    )


class Capture:
    """Forward hooks that keep module outputs."""

    def __init__(self):
        self.out: dict[str, object] = {}
        self.handles = []

    def keep(self, module, key):
        def hook(_module, _inputs, output):
            self.out[key] = output

        self.handles.append(module.register_forward_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()


def forward_inputs() -> dict:
    gen = torch.Generator().manual_seed(FORWARD_INPUT_SEED)
    latent = torch.randn((1, 16, 8, 8), generator=gen, dtype=torch.float32)
    encoder = torch.randn((1, MAX_SEQUENCE_LENGTH, 32), generator=gen, dtype=torch.float32)
    pooled = torch.randn((1, 32), generator=gen, dtype=torch.float32)
    return {
        "fwd_latent": latent,
        "fwd_hidden": FluxPipeline._pack_latents(latent, 1, 16, 8, 8),
        "fwd_encoder": encoder,
        "fwd_pooled": pooled,
        "fwd_timestep": torch.tensor([FORWARD_TIMESTEP], dtype=torch.float32),
        "fwd_guidance": torch.full([1], GUIDANCE, dtype=torch.float32),
        "fwd_img_ids": FluxPipeline._prepare_latent_image_ids(1, 4, 4, torch.device("cpu"), torch.float32),
        "fwd_txt_ids": torch.zeros(MAX_SEQUENCE_LENGTH, 3, dtype=torch.float32),
    }


@torch.no_grad()
def forward_fixture(dev: FluxTransformer2DModel, schnell: FluxTransformer2DModel, tensors: dict, meta: dict) -> None:
    inp = forward_inputs()
    tensors.update(inp)
    cap = Capture()
    cap.keep(dev.time_text_embed, "fwd_temb")
    cap.keep(dev.pos_embed, "rope")
    cap.keep(dev.context_embedder, "fwd_context")
    cap.keep(dev.x_embedder, "fwd_x_embed")
    cap.keep(dev.norm_out, "fwd_norm_out")
    for k, block in enumerate(dev.transformer_blocks):
        cap.keep(block, f"double_{k}")
    for k, block in enumerate(dev.single_transformer_blocks):
        cap.keep(block, f"single_{k}")
    kwargs = dict(
        hidden_states=inp["fwd_hidden"],
        timestep=inp["fwd_timestep"],
        pooled_projections=inp["fwd_pooled"],
        encoder_hidden_states=inp["fwd_encoder"],
        txt_ids=inp["fwd_txt_ids"],
        img_ids=inp["fwd_img_ids"],
        joint_attention_kwargs=None,
        return_dict=False,
    )
    try:
        out = dev(guidance=inp["fwd_guidance"], **kwargs)[0]
    finally:
        cap.remove()
    c = cap.out
    tensors["fwd_out"] = out
    for key in ["fwd_temb", "fwd_context", "fwd_x_embed", "fwd_norm_out"]:
        tensors[key] = c[key]
    tensors["fwd_rope_cos"], tensors["fwd_rope_sin"] = c["rope"]
    for kind, n in [("double", len(dev.transformer_blocks)), ("single", len(dev.single_transformer_blocks))]:
        for k in range(n):
            encoder, hidden = c[f"{kind}_{k}"]  # both block kinds return (encoder, hidden)
            tensors[f"fwd_{kind}_{k}_hidden"] = hidden
            tensors[f"fwd_{kind}_{k}_encoder"] = encoder
    assert tensors["fwd_rope_cos"].dtype == torch.float32 and tensors["fwd_rope_cos"].shape == (32, 8)

    # The conditioning, piece by piece, for debugging (what time_text_embed computes).
    emb = dev.time_text_embed
    t_in = inp["fwd_timestep"].to(torch.float32) * 1000
    g_in = inp["fwd_guidance"].to(torch.float32) * 1000
    tensors["fwd_timestep_proj"] = emb.time_proj(t_in)
    tensors["fwd_guidance_proj"] = emb.time_proj(g_in)
    temb = (emb.timestep_embedder(tensors["fwd_timestep_proj"]) + emb.guidance_embedder(tensors["fwd_guidance_proj"])
            + emb.text_embedder(inp["fwd_pooled"]))
    assert torch.equal(temb, tensors["fwd_temb"])

    out_s = schnell(**kwargs)[0]
    tensors["fwd_schnell_out"] = out_s

    for key, t in [("fwd_out", out), ("fwd_schnell_out", out_s)]:
        assert torch.isfinite(t).all()
        m = t.abs().max().item()
        assert 0.5 < m < 50, f"{key}: max|out| {m} is not of order 1"
        meta[f"{key}_max_abs"] = m
    # every input must matter
    base = out
    for name, change in [
        ("guidance", dict(guidance=inp["fwd_guidance"] * 0.5)),
        ("timestep", dict(timestep=inp["fwd_timestep"] * 0.5)),
        ("pooled", dict(pooled_projections=inp["fwd_pooled"] * 0.5)),
        ("encoder", dict(encoder_hidden_states=inp["fwd_encoder"] * 0.5)),
        ("img_ids", dict(img_ids=inp["fwd_img_ids"] * 0.5)),
    ]:
        kw = dict(kwargs, guidance=inp["fwd_guidance"])
        kw.update(change)
        d = (dev(**kw)[0] - base).abs().max().item()
        assert d > 1e-2, f"the output barely depends on {name} ({d})"

    meta["fwd_input_seed"] = FORWARD_INPUT_SEED
    meta["fwd_timestep"] = FORWARD_TIMESTEP
    meta["fwd_guidance"] = GUIDANCE
    meta["fwd_timestep_inside"] = float((inp["fwd_timestep"] * 1000).item())
    meta["fwd_notes"] = (
        "fwd_latent [1,16,8,8] ~ N(0,1) packed 2x2 by FluxPipeline._pack_latents into fwd_hidden [1,16,64]; "
        "fwd_encoder, fwd_pooled ~ N(0,1) (same generator, in that order); fwd_img_ids = "
        "_prepare_latent_image_ids (rows [0, y, x]); fwd_txt_ids = zeros. Inside the model: timestep * 1000 and "
        "guidance * 1000 (float32) go through Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0); "
        "fwd_temb = timestep_embedder + guidance_embedder + text_embedder(pooled). ids = cat(txt_ids, img_ids); "
        "fwd_rope_cos/sin [32, 8]: per axis (dims 2,2,4, theta 10000) freqs computed in float64 on the CPU, cos/sin "
        "repeat_interleaved x2, cast to float32, axes concatenated. Block outputs: fwd_double_k_* after "
        "transformer_blocks[k], fwd_single_k_* after single_transformer_blocks[k] (the single blocks run on "
        "cat(encoder, hidden) and split it again); fwd_norm_out is norm_out's output before proj_out. "
        "fwd_schnell_out: flux_schnell_transformer on the same inputs without guidance."
    )
    meta["fwd_schnell_model"] = "flux_schnell_transformer"


def schedule(config: dict, n: int, image_seq_len: int):
    """What FluxPipeline.__call__ does to set up its scheduler."""
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    sigmas = np.linspace(1.0, 1 / n, n)
    mu = calculate_shift(
        image_seq_len,
        scheduler.config.get("base_image_seq_len", 256),
        scheduler.config.get("max_image_seq_len", 4096),
        scheduler.config.get("base_shift", 0.5),
        scheduler.config.get("max_shift", 1.15),
    )
    timesteps, steps = retrieve_timesteps(scheduler, n, torch.device("cpu"), sigmas=sigmas, mu=mu)
    assert steps == n and timesteps.dtype == torch.float32 and scheduler.sigmas.dtype == torch.float32
    return scheduler, mu, sigmas


def scheduler_fixtures(tensors: dict, meta: dict) -> None:
    cases = []
    for n, seq in SCHEDULE_CASES:
        scheduler, mu, lin = schedule(DEV_SCHEDULER_CONFIG, n, seq)
        # The scheduler computes in float32: np.float32 input sigmas, then (NumPy 2 / NEP 50:
        # Python floats do not upcast float32 arrays) exp(mu) / (exp(mu) + (1 / s - 1) ** 1.0).
        s32 = np.array(lin).astype(np.float32)
        expect = math.exp(mu) / (math.exp(mu) + (1 / s32 - 1) ** 1.0)
        assert expect.dtype == np.float32
        assert np.array_equal(scheduler.sigmas[:-1].numpy(), expect)
        assert torch.equal(scheduler.timesteps, scheduler.sigmas[:-1] * 1000)
        tensors[f"sched_{n}_{seq}_timesteps"] = scheduler.timesteps.clone()
        tensors[f"sched_{n}_{seq}_sigmas"] = scheduler.sigmas.clone()
        # float64 reference of the same formula (not what the scheduler holds)
        f64 = np.exp(mu) / (np.exp(mu) + (1 / np.asarray(lin, dtype=np.float64) - 1))
        tensors[f"sched_{n}_{seq}_sigmas_f64_reference"] = torch.from_numpy(np.append(f64, 0.0))
        meta[f"sched_{n}_{seq}_mu"] = mu
        cases.append([n, seq])
    scheduler, mu, _ = schedule(SCHNELL_SCHEDULER_CONFIG, SCHNELL_SCHEDULE_STEPS, 16)
    tensors[f"sched_schnell_{SCHNELL_SCHEDULE_STEPS}_timesteps"] = scheduler.timesteps.clone()
    tensors[f"sched_schnell_{SCHNELL_SCHEDULE_STEPS}_sigmas"] = scheduler.sigmas.clone()
    meta["sched_cases"] = cases
    meta["sched_scheduler_config"] = DEV_SCHEDULER_CONFIG
    meta["sched_schnell_scheduler_config"] = SCHNELL_SCHEDULER_CONFIG
    meta["sched_schnell_steps"] = SCHNELL_SCHEDULE_STEPS
    meta["sched_schnell_image_seq_len"] = 16
    meta["sched_schnell_mu_ignored"] = mu
    meta["sched_notes"] = (
        "As FluxPipeline: sigmas = np.linspace(1.0, 1/N, N) (float64), mu = calculate_shift(image_seq_len, "
        "base_image_seq_len, max_image_seq_len, base_shift, max_shift) = image_seq_len * m + b with "
        "m = (max_shift - base_shift) / (max_seq_len - base_seq_len), b = base_shift - m * base_seq_len (Python "
        "float64), then set_timesteps(sigmas=sigmas, mu=mu): sigmas cast to float32 FIRST, then with "
        "use_dynamic_shifting sigma' = exp(mu) / (exp(mu) + (1 / sigma - 1) ** 1.0) evaluated in float32 (NumPy 2 "
        "keeps float32 with Python-float operands), else shift * s / (1 + (shift - 1) * s) (float32); "
        "timesteps = sigma' * 1000 (float32 tensor); sigmas = cat(sigma', [0]). *_sigmas_f64_reference is the "
        "same formula in float64 for comparison only. The schnell scheduler ignores mu (shift 1.0 leaves the "
        "linspace unchanged apart from the float32 cast)."
    )


def pack_noise(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What FluxPipeline.prepare_latents draws for generator=torch.Generator().manual_seed(seed)."""
    noise = randn_tensor((1, 16, 8, 8), generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"),
                         dtype=torch.float32)
    return noise, FluxPipeline._pack_latents(noise, 1, 16, 8, 8)


@torch.no_grad()
def run_pipe(pipe: FluxPipeline, latents: torch.Tensor, steps: int, output_type: str):
    """One FluxPipeline call; returns the output and what every step produced."""
    step_latents, model_outputs, model_timesteps, model_guidance = [], [], [], []

    def on_step_end(_pipe, i, t, kwargs):
        step_latents.append(kwargs["latents"].clone())
        return {}

    def on_transformer(_module, _args, kwargs, output):
        model_outputs.append(output[0].clone())
        model_timesteps.append(kwargs["timestep"].clone())
        g = kwargs.get("guidance")
        model_guidance.append(None if g is None else g.clone())

    handle = pipe.transformer.register_forward_hook(on_transformer, with_kwargs=True)
    try:
        out = pipe(
            prompt=PIPE_PROMPT,
            height=HEIGHT,
            width=WIDTH,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            latents=latents.clone(),
            output_type=output_type,
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        ).images
    finally:
        handle.remove()
    assert len(step_latents) == steps
    return out, step_latents, model_outputs, model_timesteps, model_guidance


def pipeline_fixture(pipe: FluxPipeline, in_memory: FluxPipeline, tensors: dict, meta: dict) -> None:
    assert pipe.vae_scale_factor == 2
    noise, packed = pack_noise(PIPE_NOISE_SEED)
    drawn, img_ids = pipe.prepare_latents(1, 16, HEIGHT, WIDTH, torch.float32, torch.device("cpu"),
                                          torch.Generator().manual_seed(PIPE_NOISE_SEED))
    assert torch.equal(drawn, packed)
    final, steps, outputs, model_t, model_g = run_pipe(pipe, packed, PIPE_STEPS, "latent")
    timesteps, sigmas = pipe.scheduler.timesteps.clone(), pipe.scheduler.sigmas.clone()
    image, steps_np, *_ = run_pipe(pipe, packed, PIPE_STEPS, "np")
    assert torch.equal(final, steps[-1]) and torch.equal(steps_np[-1], final)
    # the in-memory pipeline (before save/load) must agree bit for bit
    final_mem = run_pipe(in_memory, packed, PIPE_STEPS, "latent")[0]
    assert torch.equal(final_mem, final), "the reloaded pipeline differs from the one that was saved"

    # the sampler, redone by hand: x + (sigma_next - sigma) * v, in float32
    x = packed
    for i in range(PIPE_STEPS):
        assert torch.equal(model_t[i], (timesteps[i].expand(1).to(torch.float32)) / 1000)
        assert torch.equal(model_g[i], torch.full([1], GUIDANCE, dtype=torch.float32))
        x = x + (sigmas[i + 1] - sigmas[i]) * outputs[i]
        assert torch.equal(x, steps[i]), f"Euler step {i}"

    decoder_input = FluxPipeline._unpack_latents(final, HEIGHT, WIDTH, pipe.vae_scale_factor)
    decoder_input = decoder_input / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    with torch.no_grad():
        decoded = pipe.vae.decode(decoder_input, return_dict=False)[0]
    again = pipe.image_processor.postprocess(decoded, output_type="np")
    assert np.array_equal(again, image)
    assert image.dtype == np.float32 and image.shape == (1, HEIGHT, WIDTH, 3)
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 1e-3

    tensors["pipe_noise"] = noise
    tensors["pipe_latents_init"] = packed
    tensors["pipe_img_ids"] = img_ids
    for i, s in enumerate(steps):
        tensors[f"pipe_step_{i}"] = s
        tensors[f"pipe_noise_pred_{i}"] = outputs[i]
    tensors["pipe_model_timesteps"] = torch.cat(model_t)
    tensors["pipe_timesteps"] = timesteps
    tensors["pipe_sigmas"] = sigmas
    tensors["pipe_latents_final"] = final
    tensors["pipe_decoder_input"] = decoder_input
    tensors["pipe_decoded"] = decoded
    tensors["pipe_image"] = torch.from_numpy(np.ascontiguousarray(image))

    seq = packed.shape[1]
    meta["pipe_prompt"] = PIPE_PROMPT
    meta["pipe_height"] = HEIGHT
    meta["pipe_width"] = WIDTH
    meta["pipe_latent_height"] = 8
    meta["pipe_latent_width"] = 8
    meta["pipe_image_seq_len"] = seq
    meta["pipe_num_inference_steps"] = PIPE_STEPS
    meta["pipe_guidance_scale"] = GUIDANCE
    meta["pipe_max_sequence_length"] = MAX_SEQUENCE_LENGTH
    meta["pipe_noise_seed"] = PIPE_NOISE_SEED
    meta["pipe_mu"] = calculate_shift(seq, 256, 4096, 0.5, 1.15)
    meta["pipe_timesteps"] = [float(t) for t in timesteps]
    meta["pipe_notes"] = (
        "FluxPipeline.from_pretrained('flux_pipeline')(prompt, height=16, width=16, num_inference_steps=6, "
        "guidance_scale=3.5, max_sequence_length=16, latents=pipe_latents_init). pipe_noise = randn_tensor([1,16,8,8], "
        "Generator().manual_seed(pipe_noise_seed)) and pipe_latents_init = _pack_latents(pipe_noise): what the pipeline "
        "draws itself with that generator. Prompt embeddings are t5_hidden_0 / clip_pooled_0, txt_ids zeros [16,3], "
        "img_ids pipe_img_ids. Each step: the transformer gets timestep = t.expand(1).to(float32) / 1000 "
        "(pipe_model_timesteps) and guidance = full([1], 3.5) (float32), returns pipe_noise_pred_i; then "
        "scheduler.step: prev = sample.float() + (sigma[i+1] - sigma[i]) * noise_pred (float32) = pipe_step_i. "
        "pipe_latents_final (output_type='latent') = pipe_step_5. Decode: pipe_decoder_input = "
        "_unpack_latents(final) / 0.3611 + 0.1159, pipe_decoded = vae.decode (in [-1,1]), pipe_image = "
        "(decoded / 2 + 0.5).clamp(0, 1) as [1,H,W,3] (output_type='np')."
    )


def run_cached(pipe: FluxPipeline, latents: torch.Tensor, threshold: float):
    config = DBCacheConfig(
        Fn_compute_blocks=1,
        Bn_compute_blocks=0,
        residual_diff_threshold=threshold,
        max_warmup_steps=CD_WARMUP,
        warmup_interval=1,
        max_cached_steps=-1,
        max_continuous_cached_steps=-1,
    )
    cache_dit.enable_cache(pipe, cache_config=config)
    try:
        final, steps, *_ = run_pipe(pipe, latents, CD_STEPS, "latent")
        stats = cache_dit.summary(pipe, logging=False)
    finally:
        cache_dit.disable_cache(pipe)
    with_steps = [s for s in stats if s.cache_options and s.cached_steps is not None and s.residual_diffs]
    assert len(with_steps) >= 1, stats
    st = with_steps[0]
    diffs = {int(k): float(v) for k, v in st.residual_diffs.items()}
    return final, steps, list(st.cached_steps), diffs, config


def cache_dit_fixture(tensors: dict, meta: dict) -> None:
    from cache_dit.envs import ENV

    assert ENV.CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS, "keep cache-dit's default FLUX wiring"
    pipe = load_pipeline()
    _, latents = pack_noise(CD_NOISE_SEED)
    uncached, uncached_steps, *_ = run_pipe(pipe, latents, CD_STEPS, "latent")
    cached, cached_steps, steps_list, diffs, config = run_cached(pipe, latents, CD_THRESHOLD)
    # cache-dit released its hooks: the plain pipeline gives the uncached result again
    again = run_pipe(pipe, latents, CD_STEPS, "latent")[0]
    assert torch.equal(again, uncached), "disable_cache did not restore the pipeline"

    eligible = list(range(CD_WARMUP, CD_STEPS))
    assert sorted(diffs) == eligible, diffs
    assert 0 < len(steps_list) < len(eligible), f"threshold {CD_THRESHOLD}: cached steps {steps_list}, diffs {diffs}"
    assert steps_list == [s for s in eligible if diffs[s] < CD_THRESHOLD]
    margin = min(abs(d - CD_THRESHOLD) for d in diffs.values())
    assert margin > CD_MIN_MARGIN, f"a residual diff is within {margin} of the threshold: fragile fixture"
    assert torch.equal(cached_steps[steps_list[0] - 1], uncached_steps[steps_list[0] - 1])
    assert not torch.equal(cached, uncached)

    tensors["cd_latents_init"] = latents
    tensors["cd_uncached_final"] = uncached
    tensors["cd_cached_final"] = cached
    tensors["cd_uncached_step_latents"] = torch.stack(uncached_steps)
    tensors["cd_cached_step_latents"] = torch.stack(cached_steps)
    tensors["cd_residual_diffs"] = torch.tensor([diffs[s] for s in eligible], dtype=torch.float64)
    tensors["cd_timesteps"] = pipe.scheduler.timesteps.clone()
    tensors["cd_sigmas"] = pipe.scheduler.sigmas.clone()

    meta["cd_num_inference_steps"] = CD_STEPS
    meta["cd_noise_seed"] = CD_NOISE_SEED
    meta["cd_threshold"] = CD_THRESHOLD
    meta["cd_cached_steps"] = steps_list
    meta["cd_residual_diffs"] = {str(k): v for k, v in sorted(diffs.items())}
    meta["cd_residual_diff_steps"] = eligible
    meta["cd_min_margin"] = margin
    meta["cd_cache_config"] = {k: (str(v) if k == "cache_type" else v) for k, v in config.as_dict().items()}
    meta["cd_flux_enable_dummy_blocks"] = int(ENV.CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS)
    meta["cd_block_order"] = ["transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0",
                              "single_transformer_blocks.1"]
    meta["cd_relative_error_final"] = float((cached - uncached).abs().max() / uncached.abs().max())
    meta["cd_notes"] = (
        "cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, "
        "residual_diff_threshold=cd_threshold, max_warmup_steps=2, warmup_interval=1, max_cached_steps=-1, "
        "max_continuous_cached_steps=-1)); the same prompt / guidance / max_sequence_length as pipe_*, 12 steps, "
        "latents cd_latents_init. cache-dit's default FLUX wiring (CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS=1) runs the "
        "double and the single blocks as ONE list (cd_block_order), all called as block(hidden, encoder, temb, "
        "rope) -> (encoder, hidden). Per step: Fn = the first block; r = hidden_after_Fn - hidden_before "
        "(image stream only). Steps 0..max_warmup_steps-1 always compute (no diff recorded). Later: diff = "
        "mean|r_prev - r| / mean|r_prev| (float32 means, .item()) where r_prev is the Fn residual of the last "
        "COMPUTED step (it is not updated on cached steps); cached when diff < threshold. Computed step: run the "
        "remaining blocks and store hidden_end - hidden_after_Fn and encoder_end - encoder_after_Fn. Cached step: "
        "hidden = hidden_after_Fn + stored residual, encoder = encoder_after_Fn + stored encoder residual, then "
        "norm_out / proj_out as usual. cd_residual_diffs[j] is the diff of step cd_residual_diff_steps[j] "
        "(float64 from Python floats). cd_*_step_latents [12,1,16,64]: latents after every step."
    )


# --------------------------------------------------------------------------------------------
# Saving, README
# --------------------------------------------------------------------------------------------


def save_pipeline(pipe: FluxPipeline, schnell: FluxTransformer2DModel) -> None:
    for d in [PIPE_DIR, SCHNELL_DIR]:
        shutil.rmtree(d, ignore_errors=True)
    pipe.save_pretrained(PIPE_DIR, safe_serialization=True)
    schnell.save_pretrained(SCHNELL_DIR, safe_serialization=True)
    check_modules_equal(schnell, FluxTransformer2DModel.from_pretrained(SCHNELL_DIR), "schnell")
    assert (PIPE_DIR / "tokenizer" / "tokenizer.json").is_file()
    assert (PIPE_DIR / "tokenizer_2" / "tokenizer.json").is_file()
    for p in PIPE_DIR.rglob("*"):
        assert p.suffix not in {".bin", ".pt", ".pth", ".pkl"}, p


def files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def total_size(paths) -> int:
    total = 0
    for p in paths:
        total += sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else p.stat().st_size
    return total


def versions() -> dict[str, str]:
    import safetensors

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "cache_dit": cache_dit.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def write_readme(meta: dict, pipe: FluxPipeline) -> None:
    pipe_files = ", ".join(files_of(PIPE_DIR))
    schnell_files = ", ".join(files_of(SCHNELL_DIR))
    size = total_size([PIPE_DIR, SCHNELL_DIR, GOLDEN])
    vers = ", ".join(f"{k} {v}" for k, v in versions().items())
    section = f"""{README_BEGIN}
## FLUX.1 (tools/make_flux_fixtures.py)

Made by `/work/.fixvenv/bin/python tools/make_flux_fixtures.py` (run it after
`tools/make_fixtures.py`, which rewrites this README; this section is replaced in place).
CPU, float32, one thread, fixed seeds, deterministic algorithms; byte-identical on a rerun.
Versions: {vers}. Total {size:,} bytes.

### `flux_pipeline/`

`FluxPipeline.save_pretrained(safe_serialization=True)`: {pipe_files}.

* `transformer/`: `FluxTransformer2DModel({json.dumps(TRANSFORMER_CONFIG)})`, every parameter
  re-initialised (seed {DEV_WEIGHT_SEED}): weights N(0, 1/fan_in), biases N(0, {TRANSFORMER_BIAS_STD}²),
  q/k RMSNorm weights N(1, {TRANSFORMER_NORM_STD}²); the fast-sinusoid columns of
  `time_text_embed.timestep_embedder.linear_1` damped by min(1, {TIMESTEP_FREQ_CUTOFF} / f) so the model responds
  smoothly to t (as a trained one does).
* `vae/`: `vae_16` of tools/make_fixtures.py (same weights), scaling_factor 0.3611, shift_factor 0.1159;
  `vae_scale_factor` = 2, so height = width = {HEIGHT} gives an 8×8 latent, 16 packed tokens.
* `text_encoder/`: CLIPTextModel (hidden 32, 2 layers, 4 heads, intermediate 37, quick_gelu,
  77 positions), vocab {meta['clip_vocab_size']}; bos {meta['clip_bos_id']}, eos = pad = unk {meta['clip_eos_id']} (the highest id).
* `text_encoder_2/`: T5EncoderModel (d_model 32, d_kv 8, d_ff 37, 2 layers, 4 heads, 8 buckets, max distance
  20, gated-gelu), vocab {meta['t5_vocab_size']}; pad 0, eos 1, unk 2, no sentinel tokens.
* `tokenizer/`: byte-level BPE trained on the script's corpus, CLIP's normaliser (NFC, whitespace, lowercase),
  split regex + ByteLevel, `</w>` suffix, `<|startoftext|>` … `<|endoftext|>` added by the post-processor,
  model_max_length 77. `tokenizer_2/`: Unigram trained on the same corpus, WhitespaceSplit + Metaspace("▁"),
  `</s>` appended, no normaliser (case-sensitive).
* `scheduler/`: FlowMatchEulerDiscreteScheduler `{json.dumps(DEV_SCHEDULER_CONFIG)}` (FLUX.1-dev).

### `flux_schnell_transformer/`

The same transformer config with `guidance_embeds=False`, seed {SCHNELL_WEIGHT_SEED}: {schnell_files}.

### `flux_golden.safetensors` ({GOLDEN.stat().st_size:,} bytes)

Metadata: every value is JSON. Prompts {json.dumps(PROMPTS[:2])} and a long one (truncated by both
tokenizers); `max_sequence_length` 16.

* `clip_ids_i` / `t5_ids_i` (int64) exactly as `_get_clip_prompt_embeds` / `_get_t5_prompt_embeds`
  tokenise (padding to max_length, truncation); `clip_hidden_i` the CLIP last_hidden_state,
  `clip_pooled_i` the pooled embedding the pipeline uses, `t5_hidden_i` the T5 output.
* `fwd_*`: one dev transformer forward as the pipeline calls it (timestep = t/1000 = {FORWARD_TIMESTEP},
  guidance {GUIDANCE}) with the embeddings, RoPE tables, every block's outputs and `norm_out`;
  `fwd_schnell_out` the schnell model on the same inputs.
* `sched_N_seq_*`: the schedules FluxPipeline sets up for (N, image_seq_len) in {json.dumps(SCHEDULE_CASES)}
  and `sched_schnell_4_*` (shift 1, no dynamic shifting). Float32 as the scheduler holds them;
  `*_sigmas_f64_reference` the same formula in float64 (for comparison only).
* `pipe_*`: a whole FluxPipeline run, "{PIPE_PROMPT}", {PIPE_STEPS} steps, guidance {GUIDANCE}, every step's latents
  and transformer output, the decoder input, the decode and the image [1, {HEIGHT}, {WIDTH}, 3] in [0, 1].
* `cd_*`: cache-dit DBCache (F1B0, warmup {CD_WARMUP}, threshold {CD_THRESHOLD}) on {CD_STEPS} steps next to the
  same run uncached; cached steps {json.dumps(meta['cd_cached_steps'])}, residual diffs in `cd_residual_diffs`
  (steps {CD_WARMUP}..{CD_STEPS - 1}) and in the metadata.

The metadata's `*_notes` entries spell out the exact order of operations.

{mf.describe_tensors(GOLDEN)}
{README_END}
"""
    text = README.read_text() if README.exists() else "# Golden fixtures\n"
    if README_BEGIN in text and README_END in text:
        head, rest = text.split(README_BEGIN, 1)
        tail = rest.split(README_END, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text)


def main() -> None:
    assert sys.byteorder == "little", "safetensors data must be little-endian"
    mf.setup_determinism()
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    OUT.mkdir(parents=True, exist_ok=True)

    pipe = build_pipeline()
    schnell = build_transformer(SCHNELL_CONFIG, SCHNELL_WEIGHT_SEED)
    save_pipeline(pipe, schnell)
    loaded = load_pipeline()
    check_loaded(pipe, loaded)

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, object] = {
        "produced_by": "tools/make_flux_fixtures.py",
        "versions": versions(),
        "torch_num_threads": torch.get_num_threads(),
        "deterministic_algorithms": True,
        "dtype": "float32",
        "pipeline": "flux_pipeline",
        "transformer_config": TRANSFORMER_CONFIG,
        "schnell_transformer": "flux_schnell_transformer",
        "schnell_transformer_config": SCHNELL_CONFIG,
        "dev_weight_seed": DEV_WEIGHT_SEED,
        "schnell_weight_seed": SCHNELL_WEIGHT_SEED,
        "clip_weight_seed": CLIP_WEIGHT_SEED,
        "t5_weight_seed": T5_WEIGHT_SEED,
        "transformer_init": (
            "weights N(0, 1/fan_in); biases N(0, 0.1^2); q/k RMSNorm weights N(1, 0.1^2); then the columns of "
            "time_text_embed.timestep_embedder.linear_1.weight reading frequency f = exp(-ln(10000) * (col % 128) / "
            f"128) scaled by min(1, {TIMESTEP_FREQ_CUTOFF} / f)"
        ),
        "text_encoder_init": f"transformers' init + N(0, {TEXT_WEIGHT_NOISE}^2) on every parameter",
        "vae": "vae_16 of tools/make_fixtures.py (same weights)",
        "vae_scale_factor": loaded.vae_scale_factor,
        "vae_scaling_factor": loaded.vae.config.scaling_factor,
        "vae_shift_factor": loaded.vae.config.shift_factor,
        "scheduler_config": DEV_SCHEDULER_CONFIG,
        "corpus": CORPUS,
    }
    encoder_fixtures(loaded, tensors, meta)
    forward_fixture(loaded.transformer, FluxTransformer2DModel.from_pretrained(SCHNELL_DIR).eval(), tensors, meta)
    scheduler_fixtures(tensors, meta)
    pipeline_fixture(loaded, pipe, tensors, meta)
    cache_dit_fixture(tensors, meta)

    for name, t in tensors.items():
        assert t.dtype in (torch.float32, torch.int64, torch.float64), name
        assert t.dtype != torch.float64 or name in {"cd_residual_diffs"} or name.endswith("_f64_reference"), name
        assert torch.isfinite(t.double()).all(), name
    mf.write_safetensors(GOLDEN, tensors, {k: meta_json(v) for k, v in meta.items()})
    write_readme(meta, loaded)

    size = total_size([PIPE_DIR, SCHNELL_DIR, GOLDEN])
    print(f"flux fixtures: {len(tensors)} tensors, {size:,} bytes "
          f"(cached steps {meta['cd_cached_steps']} at threshold {CD_THRESHOLD})")
    assert size < 2 * 1024 * 1024


if __name__ == "__main__":
    main()
