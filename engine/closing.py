"""The shortest way to complete a grammar from a matcher's state, in tokens: what budget steering follows.

`shortest_completion(matcher, ...)` is a breadth-first search over token sequences, each node a forked
matcher, that stops at the first depth where the grammar is complete. It returns that depth (the
distance) and every first token that starts a path of that length. The search is exact over a small
candidate set per node, so the distance is the length of a real completion (an upper bound of the true
shortest one, which is what a guarantee needs) and the first tokens really lead to it:

    forced text (jump-forward)      its first token only: everything else is a detour
    inside an open string           tokens that close it ('"', '"}', '"]}', ...), else one filler character
                                    (content never shortens)
    otherwise                       allowed tokens made of JSON closers/openers ("}],:[{ and "0"), the stop
                                    tokens, else the allowed single-byte tokens, else the first allowed token

A node budget bounds the work; past it the search gives up (None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xgrammar as xgr

STRUCTURAL_CHARS = frozenset('"}],:[{')
MAX_NODES = 1000


@dataclass(frozen=True, slots=True)
class Completion:
    distance: int  # tokens to a complete grammar (0: complete now)
    first_tokens: frozenset[int]  # the tokens that start a completion of that length (empty when 0)


class CandidateTokens:
    """Per vocabulary: which token ids the search tries, derived once from xgrammar's decoded vocabulary."""

    def __init__(self, tokenizer_info: xgr.TokenizerInfo):
        vocab = tokenizer_info.decoded_vocab
        texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in vocab]
        self.vocab_size = tokenizer_info.vocab_size
        self.bytes_of = [v if isinstance(v, bytes) else v.encode() for v in vocab]
        self.structural = np.array(
            [i for i, t in enumerate(texts) if t and len(t) <= 3 and set(t) <= STRUCTURAL_CHARS]
            + [i for i, t in enumerate(texts) if t == "0"], dtype=np.int64)
        self.single_byte = np.array([i for i, v in enumerate(vocab) if len(v) == 1], dtype=np.int64)
        self.string_closers = np.array([i for i in self.structural if texts[i].startswith('"')], dtype=np.int64)
        # Allowed only inside a string (no JSON structure or declared name uses it): marks "in a string".
        self.string_probe = texts.index("~")
        self.stop = np.array(sorted(tokenizer_info.stop_token_ids), dtype=np.int64)


def shortest_completion(matcher: xgr.GrammarMatcher, tokens: CandidateTokens, limit: int,
                        max_nodes: int = MAX_NODES) -> Completion | None:
    """The distance and first tokens, or None when no completion within `limit` tokens was found."""
    if matcher.is_completed():
        return Completion(0, frozenset())
    bitmask = xgr.allocate_token_bitmask(1, tokens.vocab_size)
    frontier = [(matcher, None, b"")]  # (matcher after the path, first token of the path, its bytes)
    seen = {b""}  # the state is a function of the bytes: one path per text is enough
    nodes = 0
    for depth in range(1, limit + 1):
        found, next_frontier = set(), []
        for node, first, text in frontier:
            for token in _candidates(node, tokens, bitmask):
                start = token if first is None else first
                child_text = text + tokens.bytes_of[token]
                if child_text in seen:
                    continue  # reached by another path of at most this length
                seen.add(child_text)
                nodes += 1
                if nodes > max_nodes:
                    return None
                child = node.fork()
                if not child.accept_token(token):
                    continue
                if child.is_completed():
                    found.add(start)
                elif not found:
                    next_frontier.append((child, start, child_text))
        if found:
            return Completion(depth, frozenset(found))
        frontier = next_frontier
        if not frontier:
            return None
    return None


def _candidates(node: xgr.GrammarMatcher, tokens: CandidateTokens, bitmask) -> list[int]:
    forced = node.find_jump_forward_tokens()
    if forced:
        return [forced[0]]
    node.fill_next_token_bitmask(bitmask)
    words = bitmask[0].numpy().view(np.uint32)

    def allowed(ids: np.ndarray) -> np.ndarray:
        return ids[(words[ids >> 5] >> (ids & 31).astype(np.uint32)) & 1 == 1]

    if len(allowed(np.array([tokens.string_probe]))):
        closers = allowed(tokens.string_closers)
        return [int(t) for t in closers] if len(closers) else [int(t) for t in allowed(tokens.single_byte)[:1]]
    found = [*allowed(tokens.stop), *allowed(tokens.structural)]
    if not found:
        found = list(allowed(tokens.single_byte))
    if not found:
        ids = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")[: tokens.vocab_size])
        found = list(ids[:1])
    return [int(t) for t in found]


WINDOW = 16  # steer once the budget left is within this many tokens of the distance
MAX_GROWTH = 4  # assumed most a token adds to the distance (opening a value that has required keys)
TOP_K = 3  # the model's favourite tokens checked in the window


class BudgetSteering:
    """Keeps a grammar completable within max_tokens (one per sequence, driven by GrammarLogitsProcessor).

    Let R be the tokens left and D the distance to a complete grammar. Far from the end nothing changes.
    Within WINDOW of it only verified tokens stay allowed: the first tokens of a shortest completion, plus
    those of the model's TOP_K favourites after which the grammar can still complete within R - 1 tokens.
    Whatever is sampled from them, the output completes within max_tokens; when R == D only the shortest
    completion remains.
    """

    def __init__(self, tokens: CandidateTokens, max_tokens: int):
        self._tokens = tokens
        self._max_tokens = max_tokens
        self._next_check = 0  # in accepted tokens

    def apply(self, matcher: xgr.GrammarMatcher, logits, num_accepted: int) -> None:
        import torch

        if num_accepted < self._next_check:
            return
        remaining = self._max_tokens - num_accepted
        completion = shortest_completion(matcher, self._tokens, remaining) or shortest_completion(
            matcher, self._tokens, remaining, max_nodes=10 * MAX_NODES)
        if completion is None:
            return  # cannot complete any more (past a detour), or too costly to tell: leave it
        slack = remaining - completion.distance - WINDOW
        if slack > 0:
            # Far from the end: measure again before the slack can be used up (the distance grows by at
            # most MAX_GROWTH per token while the budget shrinks by one).
            self._next_check = num_accepted + max(1, slack // (MAX_GROWTH + 1))
            return
        keep = set(completion.first_tokens) or set(self._tokens.stop.tolist())
        if remaining > completion.distance:
            for token in torch.topk(logits, TOP_K).indices.tolist():
                if logits[token] == float("-inf"):
                    break
                child = matcher.fork()
                if token in keep or (child.accept_token(token) and
                                     shortest_completion(child, self._tokens, remaining - 1)):
                    keep.add(token)
        keep = sorted(keep)
        kept = logits[keep].clone()
        logits.fill_(float("-inf"))
        logits[keep] = kept
