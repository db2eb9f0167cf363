"""The OpenAI completions protocol, the subset lm-eval's `local-completions` and the `openai`
client send: request models (unknown fields and wrong types refused, naming the field) and the
error body OpenAI's clients parse (`{"error": {"message", "type", "param", "code"}}`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Prompt shapes the protocol allows: text, texts, token ids, lists of token ids.
Prompt = str | list[str] | list[int] | list[list[int]]


class Strict(BaseModel):
    # strict: "5" is not an int, true is not a number; forbid: a misspelled field is an error
    model_config = ConfigDict(extra="forbid", strict=True)


class CompletionRequest(Strict):
    prompt: Prompt
    model: str | None = None
    max_tokens: int = Field(16, ge=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # OpenAI's range and default
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)  # vLLM's extension; 0 or -1: off
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0)
    stream: bool = False
    # bloomforge's extension for prefix-LM models: how many prompt tokens form the prefix
    # (bidirectional); by default the whole prompt, as `bloomforge generate` treats it
    prefix_len: int | None = Field(None, ge=1)
    # vLLM's extension: name tokens "token_id:ID" in `logprobs` (text can be ambiguous)
    return_tokens_as_token_ids: bool = False
    # accepted and ignored: they change nothing here, and clients send them
    user: str | None = None
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0)
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0)

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class TokenizeRequest(Strict):
    prompt: str
    model: str | None = None
    add_special_tokens: bool = False


class DetokenizeRequest(Strict):
    tokens: list[int]
    model: str | None = None


class APIError(Exception):
    """A request the server refuses: HTTP status, message, the offending field."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}
        }


def validation_error(e: ValidationError) -> APIError:
    """The first problem of a pydantic error as a 400 naming its field (`prompt`, `stop.1`)."""
    err = e.errors()[0]
    param = ".".join(str(p) for p in err["loc"] if not _is_type_tag(p)) or None
    if err["type"] == "extra_forbidden":
        return APIError(400, f"{param}: unknown field", param)
    return APIError(400, f"{param}: {err['msg']}", param)


def _is_type_tag(p: object) -> bool:
    # pydantic names union branches in the location ("list[int]"); keep the field path only
    return isinstance(p, str) and ("[" in p or p in ("str", "int"))
