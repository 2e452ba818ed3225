"""A saved tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json``) read with the ``tokenizers``
package directly, without importing transformers (about 2 s of start-up).

:class:`FastTokenizer` offers the part of ``PreTrainedTokenizerFast`` this package calls: ``tok(texts, ...)``
with padding/truncation, the special token ids, ``len(tok)``, ``batch_decode`` and ``save_pretrained``. It
gives the same ids and texts as ``AutoTokenizer.from_pretrained`` on the same folder for the tokenizer
classes this package saves itself (tests/model/test_native_lm.py); other folders are left to transformers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["FastTokenizer", "load_saved_tokenizer"]

_SPECIAL_NAMES = ("pad", "eos", "bos", "unk", "sep", "cls", "mask")


class FastTokenizer:
    """``tokenizers.Tokenizer`` plus the special tokens named in ``tokenizer_config.json``."""

    pad_token: str | None
    pad_token_id: int | None
    eos_token: str | None
    eos_token_id: int | None
    bos_token: str | None
    bos_token_id: int | None

    def __init__(self, folder: str | Path) -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self._tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self._tok.no_padding()  # the saved file may fix padding/truncation; each call sets its own
        self._tok.no_truncation()
        self.init_kwargs: dict[str, object] = json.loads(
            (self.folder / "tokenizer_config.json").read_text(encoding="utf-8")
        )
        for name in _SPECIAL_NAMES:
            token = self.init_kwargs.get(f"{name}_token")
            if isinstance(token, dict):  # AddedToken serialised as a dict
                token = token.get("content")
            setattr(self, f"{name}_token", token)
            setattr(self, f"{name}_token_id", None if token is None else self._tok.token_to_id(token))
        self.model_max_length = int(self.init_kwargs.get("model_max_length", 10**30))

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """Token -> id, added tokens included."""
        return self._tok.get_vocab(with_added_tokens=True)

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        padding: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, object]:
        """``input_ids`` and ``attention_mask``: lists (one text) or lists of lists, tensors with ``"pt"``."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if truncation:
            limit = max_length if max_length is not None else self.model_max_length
            self._tok.enable_truncation(limit)
        if padding:
            self._tok.enable_padding(pad_id=self.pad_token_id or 0, pad_token=self.pad_token or "[PAD]")
        try:
            enc = self._tok.encode_batch(texts, add_special_tokens=add_special_tokens)
        finally:
            self._tok.no_padding()
            self._tok.no_truncation()
        ids = [e.ids for e in enc]
        mask = [e.attention_mask for e in enc]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask)}
        if single:
            return {"input_ids": ids[0], "attention_mask": mask[0]}
        return {"input_ids": ids, "attention_mask": mask}

    def batch_decode(
        self, sequences: Any, *, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False
    ) -> list[str]:
        """Texts of token id rows (a 2-d tensor or lists)."""
        if clean_up_tokenization_spaces:
            raise NotImplementedError("clean_up_tokenization_spaces=True: use the transformers tokenizer")
        rows = sequences.tolist() if isinstance(sequences, torch.Tensor) else [list(r) for r in sequences]
        return self._tok.decode_batch(rows, skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, directory: str | Path) -> None:
        """Copy the two files, so transformers and this class both read the folder back."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (self.folder / name).resolve() != (out / name).resolve():
                shutil.copyfile(self.folder / name, out / name)


#: tokenizer classes whose saved ``tokenizer.json`` alone gives transformers' ids and texts (checked in
#: tests/model/test_native_lm.py): the word vocabulary of scratch LMs and BERT WordPiece (the Q-Former's)
VERIFIED_CLASSES = frozenset(
    {"TokenizersBackend", "PreTrainedTokenizerFast", "BertTokenizer", "BertTokenizerFast"}
)


def load_saved_tokenizer(folder: str | Path) -> Any:
    """A tokenizer saved in a checkpoint: :class:`FastTokenizer` for the classes in :data:`VERIFIED_CLASSES`
    with a ``tokenizer.json``, transformers' ``AutoTokenizer`` for any other (e.g. GPT-2's or T5's own, whose
    classes add their own behaviour on top of the file)."""
    from ..schemas import check_tokenizer_config

    path = Path(folder)
    cfg_file = path / "tokenizer_config.json"
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        config = {}
    except (OSError, ValueError) as err:
        raise ValueError(f"{cfg_file}: not a JSON file ({err})") from None
    else:
        check_tokenizer_config(config, source=str(cfg_file))  # ValueError naming the key
    if (path / "tokenizer.json").is_file():
        try:
            data = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path / 'tokenizer.json'}: not a JSON file ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise ValueError(f"{path / 'tokenizer.json'}: no 'model' object: not a tokenizers file")
    if (path / "tokenizer.json").is_file() and config.get("tokenizer_class") in VERIFIED_CLASSES:
        return FastTokenizer(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
