"""Token classification (UD-POS, PAN-X, CCG supertags). Rows: {"tokens": [str], "tags": [str]}.

Tag ids index ``options["labels"]``, the same tuple as the task's ``TaskSpec.labels`` (featurize and
decode see only the options). As in XTREME (third_party/utils_tag.py), only the first sub-word of
a word carries its tag; the others, and the special tokens, get -100, and a word's prediction is
the argmax at its first sub-word.

Long sentences lose no word, as in XTREME: its preprocessing (utils_preprocess.py,
``*_tokenize_preprocess``) cuts a sentence at word boundaries into pieces of at most max_length
minus the special tokens, and run_tag.py joins the pieces' predictions back through the .idx file.
Here a row makes one feature per piece and decode joins them. A word with no sub-word, or with
more than fit in one piece, becomes a single unknown token, also as XTREME. One deviation: XTREME
ends an XLM-R sentence with two ``</s>``; here the tokenizer's own single-sentence template is used.
"""

from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from .common import ROW, as_predicted, dropping, unpadded

AUTO_MODEL = AutoModelForTokenClassification
COLUMNS = ("tokens", "tags")
FIXED_HEAD = False
IGNORED = -100  # label of non-first sub-words and special tokens: no loss, no prediction
DECODE_ONLY = ("word_ids",)  # per token: the row's word index at a word's first sub-word, else -1
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, False
official_values = as_predicted  # a tag list per sentence (PAN-X, UD-POS)


def featurize(batch: dict, tokenizer, max_length: int, options: dict) -> dict:
    tag_ids = {tag: i for i, tag in enumerate(options["labels"])}
    budget = max_length - tokenizer.num_special_tokens_to_add()
    features = {"input_ids": [], "attention_mask": [], "labels": [], "word_ids": []} | ({ROW: []} if ROW in batch else {})
    for index, (words, tags) in enumerate(zip(batch["tokens"], batch["tags"])):
        pieces = _word_pieces(words, tokenizer, budget)
        for chunk in _chunks([len(p) for p in pieces], budget):
            feature = _feature([pieces[w] for w in chunk], chunk, [tag_ids[tags[w]] for w in chunk], tokenizer)
            for key in features:
                features[key].append(batch[ROW][index] if key == ROW else feature[key])
    return features


def _word_pieces(words: list[str], tokenizer, budget: int) -> list[list[int]]:
    """Each word's sub-word ids, tokenized on its own as XTREME does; unknown when empty or too long."""
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
    return [ids if 0 < len(ids) <= budget else [tokenizer.unk_token_id] for ids in pieces]


def _chunks(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive word indices, cut greedily wherever the next word would overflow ``budget`` sub-words."""
    chunks, used = [[]], 0
    for word, length in enumerate(lengths):
        if chunks[-1] and used + length > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(word)
        used += length
    return chunks


def _feature(pieces: list[list[int]], words: list[int], tag_ids: list[int], tokenizer) -> dict:
    """One model input: special tokens around the words' sub-words; tags and word ids on first sub-words."""
    before, after = _template(tokenizer)
    labels, word_ids = [IGNORED] * len(before), [-1] * len(before)
    for ids, word, tag in zip(pieces, words, tag_ids):
        labels += [tag] + [IGNORED] * (len(ids) - 1)
        word_ids += [word] + [-1] * (len(ids) - 1)
    input_ids = before + [i for ids in pieces for i in ids] + after
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
            "labels": labels + [IGNORED] * len(after), "word_ids": word_ids + [-1] * len(after)}


def _template(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after one sentence, e.g. ([<s>], [</s>])."""
    plain, built = tokenizer("a", add_special_tokens=False)["input_ids"], tokenizer("a")["input_ids"]
    at = next(at for at in range(len(built)) if built[at:at + len(plain)] == plain)
    return built[:at], built[at + len(plain):]


def collator(tokenizer):
    return dropping(DECODE_ONLY, DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORED))


def length(features: dict) -> int:
    return len(features["input_ids"])


def outputs(model_output, batch) -> list:
    return unpadded(model_output.logits, batch["attention_mask"])


def decode(outputs, features, rows, options) -> list[list[str]]:
    """Each row's tags, one per word: its pieces' first-sub-word argmaxes, joined in order."""
    labels = options["labels"]
    predictions = [[None] * len(row["tokens"]) for row in rows]
    row = -1
    for logits, word_ids in zip(outputs, features["word_ids"]):
        row += min(w for w in word_ids if w >= 0) == 0  # a row's first piece starts at its word 0
        for word, tag in zip(word_ids, logits.argmax(-1)):
            if word >= 0:
                predictions[row][word] = labels[tag]
    return predictions


def references(rows) -> list[list[str]]:
    return [row["tags"] for row in rows]


def text(row: dict) -> str:
    return " ".join(row["tokens"])
