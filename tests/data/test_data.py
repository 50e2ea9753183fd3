"""Data resolution and the SparseGPT/Wanda sampling recipes, on the real files in shared/data."""

import json
import random

import pytest
import torch

from copal_exp.data import (
    calibration_segments,
    evaluation_windows,
    load_dataset_splits,
    load_text,
)
from copal_exp.data.recipes import evaluation_tokens
from copal_exp.data.tokens import ByteTokenizer, encode
from copal_exp.errors import DataError

TOK = ByteTokenizer()


def test_local_resolution_records_stand_ins(data_root):
    ev = load_text("wikitext2", "evaluation", data_root)
    assert ev.provenance["source"] == "local" and ev.provenance["stand_in"] is None
    assert len(ev.rows) == 4358 and ev.rows[0] == "" and ev.rows[1] == " = Robert Boulter = \n"
    cal = load_text("wikitext2", "calibration", data_root)
    assert "wiki.valid.tokens" in cal.provenance["stand_in"]
    ptb = load_text("ptb", "calibration", data_root)
    assert "ptb.valid.txt" in ptb.provenance["stand_in"] and ptb.rows[0] == ptb.rows[0].strip()
    c4 = load_text("c4", "evaluation", data_root)
    assert len(c4.rows) == 2000 and "subset" in c4.provenance["stand_in"]


def test_missing_data_gives_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"dataset 'ptb' \(calibration split\) is not available.*data.root"):
        load_text("ptb", "calibration", tmp_path, use_hub=False)
    with pytest.raises(ValueError, match="unknown dataset 'imdb'"):
        load_text("imdb", "evaluation", tmp_path)


def test_joined_text_calibration_draws_as_sparsegpt(data_root):
    source = load_text("ptb", "calibration", data_root)
    segments = calibration_segments(source, "ptb", TOK, nsamples=5, seqlen=32, seed=7)
    ids = encode(TOK, " ".join(source.rows))
    random.seed(7)
    for seg in segments:
        i = random.randint(0, ids.numel() - 32 - 1)
        assert torch.equal(seg, ids[i : i + 32])


def test_c4_calibration_draws_as_sparsegpt(data_root):
    source = load_text("c4", "calibration", data_root)
    segments = calibration_segments(source, "c4", TOK, nsamples=4, seqlen=1500, seed=3)
    random.seed(3)
    for seg in segments:
        while True:
            doc = encode(TOK, source.rows[random.randint(0, len(source.rows) - 1)])
            if doc.numel() > 1500:
                break
        j = random.randint(0, doc.numel() - 1500 - 1)
        assert torch.equal(seg, doc[j : j + 1500])


def test_evaluation_windows_and_c4_rule(data_root):
    ids = torch.arange(10)
    assert evaluation_windows(ids, 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert evaluation_windows(ids, 3, max_windows=2).shape == (2, 3)
    c4 = load_text("c4", "evaluation", data_root)
    toks = evaluation_tokens(c4, "c4", TOK, seqlen=16)
    assert toks.numel() == 256 * 16
    first = " ".join(c4.rows[:1100]).encode("utf-8")[: 256 * 16]
    assert toks.tolist() == list(first)
    wiki = load_text("wikitext2", "evaluation", data_root)
    assert evaluation_tokens(wiki, "wikitext2", TOK, 16).numel() == len("\n\n".join(wiki.rows).encode("utf-8"))


def test_load_dataset_splits_shapes(data_root):
    splits = load_dataset_splits("wikitext2", TOK, root=data_root, nsamples=3, seqlen=50, seed=0, max_windows=4)
    assert splits.calibration.shape == (3, 50) and splits.evaluation.shape == (4, 50)
    assert splits.provenance["evaluation"]["location"].endswith("wikitext-2-raw-v1.test.jsonl")
    json.dumps(splits.provenance)


def test_token_cache_keys_on_tokenizer_and_text(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from copal_exp.data.tokens import encode_cached

    def make(vocab):
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")

    small = make({"<unk>": 0, "the": 1, "cat": 2})
    ids = encode_cached(small, "the cat the dog", "ptb-evaluation", tmp_path)
    assert ids.tolist() == [1, 2, 1, 0]
    (cached,) = list(tmp_path.glob("ptb-evaluation-*.pt"))
    assert encode_cached(small, "the cat the dog", "ptb-evaluation", tmp_path).tolist() == [1, 2, 1, 0]
    encode_cached(small, "the dog", "ptb-evaluation", tmp_path)  # other text, other entry
    other = make({"<unk>": 0, "cat": 1, "the": 2})  # same size, other vocabulary: other entry
    assert encode_cached(other, "the cat the dog", "ptb-evaluation", tmp_path).tolist() == [2, 1, 2, 0]
    assert len(list(tmp_path.glob("ptb-evaluation-*.pt"))) == 3


def bos_tokenizer():
    """A word-level tokenizer that puts <s> (id 1) before every text it encodes, as LLaMA's and Gemma's do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = {w for line in open(__file__) for w in line.split()} - {"<unk>", "<s>"}
    vocab = {"<unk>": 0, "<s>": 1, **{w: i + 2 for i, w in enumerate(sorted(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>")


def test_bos_per_window_is_a_recorded_choice(data_root):
    tok = bos_tokenizer()
    official = load_dataset_splits("ptb", tok, root=data_root, nsamples=3, seqlen=20, seed=0, max_windows=5)
    # official recipe: only the whole text starts with BOS
    assert official.evaluation[0, 0] == 1 and (official.evaluation[1:, 0] != 1).all()
    assert official.provenance["bos"] == "text"
    per_window = load_dataset_splits("ptb", tok, root=data_root, nsamples=3, seqlen=20, seed=0, max_windows=5,
                                     bos="window")
    assert per_window.evaluation.shape == (5, 20) and per_window.calibration.shape == (3, 20)
    assert (per_window.evaluation[:, 0] == 1).all() and (per_window.calibration[:, 0] == 1).all()
    # the text after each BOS is the text, cut one token shorter, without the text's own BOS
    body = official.evaluation.reshape(-1)[1:]
    assert per_window.evaluation[:, 1:].reshape(-1).tolist() == body[: 5 * 19].tolist()
    assert per_window.provenance["bos"] == "window"
    with pytest.raises(DataError, match="data.bos=window: the tokenizer .* has no beginning-of-sequence token"):
        load_dataset_splits("ptb", TOK, root=data_root, nsamples=1, seqlen=20, seed=0, max_windows=1, bos="window")
