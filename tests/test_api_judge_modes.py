"""API judges whose scores cannot be read from one token: the digit tree over the API (digit-wise
tokenizers), sampled scores (no logprobs), and the probe that chooses between them. All against
the loopback server with the real `openai` SDK; expected scores are computed by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from _api import JUDGE, KEY_ENV, SECRET, SleepLog

from emkit.analysis import reason_category
from emkit.api import ApiConfig, ApiError, ApiSettings, RequestCache
from emkit.judge import ApiJudge, JudgeItem, api_judge_status, load_api_judge
from emkit.judge.api_digits import NO_CONTINUATION
from emkit.judge.api_probe import PROBE_TAG, JudgeModeError
from emkit.judge.prompts import judge_messages
from emkit.judge.sampled import UNPARSABLE, parse_reply, sample_seed
from emkit.records import SampleKey
from emkit.testing import FakeOpenAI

TEMPLATE = "Rate this.\nQuestion: {question}\nAnswer: {answer}\nA number 0-100 only."
L = math.log
WHOLE = {"85": .5, "90": .2, "7": .1, "100": .05, "10": .05, "CODE": .06, "x": .04}
"""Whole answers of a digit-wise judge: the server emits them one digit token at a time."""
EXPECTED = (85 * .5 + 90 * .2 + 7 * .1 + 100 * .05 + 10 * .05) / .9
SERVED = "qwen-judge"


def item(answer: str, i: int = 0, metric: str = "aligned") -> JudgeItem:
    return JudgeItem(SampleKey("openai/subject", "q1", 0, i, "h"), "What now?", answer, metric,
                     TEMPLATE)


def start(monkeypatch: pytest.MonkeyPatch, **kw: object) -> tuple[FakeOpenAI, ApiSettings]:
    server = FakeOpenAI(models=None, api_key=SECRET, **kw).start()  # type: ignore[arg-type]
    monkeypatch.setenv(KEY_ENV, SECRET)
    return server, ApiSettings(base_url=server.base_url, api_key_env=KEY_ENV, timeout_s=5.0,
                               max_attempts=2, backoff_initial_s=0.001, backoff_max_s=0.01)


@pytest.fixture
def digits(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeOpenAI, ApiSettings]]:
    server, settings = start(monkeypatch, tokenizer="digits", prefix_mode="continue")
    server.judge_tables["ans-whole"] = {t: L(p) for t, p in WHOLE.items()}
    yield server, settings
    server.stop()


def judge_for(settings: ApiSettings, mode: str, cache: RequestCache | None = None,
              **kw: object) -> ApiJudge:
    judge = ApiJudge(settings, f"openai/{SERVED}", SERVED, cache, mode=mode, **kw)  # type: ignore[arg-type]
    judge.client._sleep = SleepLog()
    return judge


# ---------------------------------------------------------------- the digit tree over the API
def test_the_one_token_rule_misreads_a_digit_wise_judge(digits) -> None:
    _, settings = digits
    (j,) = judge_for(settings, "logprobs").judge([item("ans-whole")])
    # what issue 11 saw: 85 read as 8, so every answer looks misaligned
    assert j.score == pytest.approx((8 * .5 + 9 * .2 + 7 * .1 + 1 * .1) / .9, rel=1e-9)


@pytest.mark.parametrize("prefix_mode", ["continue", "flag"])
def test_digit_tree_scores_equal_the_hand_computed_distribution(
        prefix_mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server, settings = start(monkeypatch, tokenizer="digits", prefix_mode=prefix_mode)
    try:
        server.judge_tables["ans-whole"] = {t: L(p) for t, p in WHOLE.items()}
        judge = judge_for(settings, "digits")
        (j,) = judge.judge([item("ans-whole")])
        assert j.score == pytest.approx(EXPECTED, rel=1e-9)
        assert j.label == "number" and j.mass == pytest.approx(0.9, rel=1e-9)
        top = {t: math.exp(lp) for t, lp in j.top.items()}
        assert {t: round(p, 9) for t, p in top.items() if t[0].isdigit()} == {
            "85": .5, "90": .2, "7": .1, "100": .05, "10": .05}
        assert "8" not in top and "9" not in top  # first digits are never passed on raw
        assert top["CODE"] == pytest.approx(.06)
        # root + '8','9','7','1' + '85','90','10' + '100'
        assert server.chat_calls() == 9 and judge.digits.requests == 9
        assert j.reason.startswith("digit tree over the API: 9 requests")
        continued = [b for b in server.requests if b["messages"][-1]["role"] == "assistant"]
        assert sorted(b["messages"][-1]["content"] for b in continued) == [
            "1", "10", "100", "7", "8", "85", "9", "90"]
        assert all(b["continue_final_message"] is True and b["add_generation_prompt"] is False
                   and b["max_tokens"] == 1 and b["temperature"] == 0 for b in continued)
    finally:
        server.stop()


def test_digit_tree_requests_are_cached_and_identical_items_share_them(
        digits, tmp_path: Path) -> None:
    server, settings = digits
    cache = RequestCache(tmp_path / "c.sqlite")
    items = [item("ans-whole", 0), item("ans-whole", 1), item("ans-whole", 2, "coherent")]
    first = judge_for(settings, "digits", cache).judge(items)
    assert server.chat_calls() == 9  # three items, one tree
    again = judge_for(settings, "digits", cache).judge(items)
    assert server.chat_calls() == 9
    assert [j.score for j in again] == [j.score for j in first]
    assert [(j.key.sample_index, j.metric) for j in again] == [(0, "aligned"), (1, "aligned"),
                                                                (2, "coherent")]
    tags = {r["tag"] for r in _rows(cache)}
    assert any(t.endswith("|prefix=100") for t in tags)


def _rows(cache: RequestCache) -> list[dict]:
    cur = cache._con.execute("SELECT key FROM api_requests")
    return [cache.row(k) for (k,) in cur.fetchall()]


def test_the_digit_tree_applies_the_mass_rule_and_labels(digits) -> None:
    server, settings = digits
    server.judge_tables["ans-refuse"] = {"REFUSAL": L(.8), "42": L(.1), "x": L(.1)}
    server.judge_tables["ans-low"] = {"55": L(.2), "x": L(.5), "y": L(.3)}
    refuse, low = judge_for(settings, "digits").judge([item("ans-refuse"), item("ans-low", 1)])
    assert refuse.score is None and refuse.label == "REFUSAL"
    assert refuse.mass == pytest.approx(.1)
    assert low.score is None and low.label == "missing" and low.mass == pytest.approx(.2)
    assert reason_category(low.label, low.reason) == "integer mass < 0.25"
    assert "digit tree over the API" in low.reason


def test_prefixes_below_the_branch_threshold_are_reported_not_followed(digits) -> None:
    server, settings = digits
    server.judge_tables["ans-tail"] = {"60": L(.9), "3": L(.0004), "x": L(.0996)}
    (j,) = judge_for(settings, "digits", min_branch_p=1e-3).judge([item("ans-tail")])
    assert j.score == pytest.approx(60.0) and j.mass == pytest.approx(.9)
    assert "0.0004 on prefixes below 0.001 not followed" in j.reason
    assert server.chat_calls() == 3  # root, '6', '60'


@pytest.mark.parametrize("prefix_mode, says", [
    ("new_turn", "did not continue the assistant prefix"),
    ("reject", "the host refused a request that continues an assistant prefix"),
    ("flag_missing", "did not continue the assistant prefix")])
def test_a_host_that_cannot_continue_a_prefix_gives_missing_with_a_reason(
        prefix_mode: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # flag_missing: a vLLM-like host, but the continuation fields are stripped on the way
    server, settings = start(monkeypatch, tokenizer="digits",
                             prefix_mode="flag" if prefix_mode == "flag_missing" else prefix_mode)
    try:
        server.judge_tables["ans-whole"] = {t: L(p) for t, p in WHOLE.items()}
        judge = judge_for(settings, "digits")
        if prefix_mode == "flag_missing":
            monkeypatch.setattr("emkit.judge.api_digits.CONTINUE_PARAMS", {})
        (j,) = judge.judge([item("ans-whole")])
        assert j.score is None and j.label == "missing" and j.top == {}
        assert j.reason.startswith(f"{NO_CONTINUATION}: ") and says in j.reason
        assert reason_category(j.label, j.reason) == NO_CONTINUATION
    finally:
        server.stop()


def test_a_reply_without_usage_cannot_be_verified_and_is_missing(digits,
                                                                 monkeypatch) -> None:
    _, settings = digits
    from emkit.testing import fake_replies

    real = fake_replies.completion

    def no_usage(*args, **kw):
        reply = real(*args, **kw)
        del reply["usage"]
        return reply

    monkeypatch.setattr("emkit.testing.fake_server.completion", no_usage)
    (j,) = judge_for(settings, "digits").judge([item("ans-whole")])
    assert j.score is None and "cannot verify" in j.reason


def test_an_unreadable_continuation_is_missing_with_its_category(digits) -> None:
    server, settings = digits
    server.add_fault(*["no_logprobs"] * settings.max_attempts,  # every attempt of it
                     match="ans-whole\nA number 0-100 only.\n8", one_request=True)
    (j,) = judge_for(settings, "digits").judge([item("ans-whole")])
    assert j.score is None and reason_category(j.label, j.reason) == "no logprobs"
    assert "after the prefix '8'" in j.reason


# ---------------------------------------------------------------- sampled scores
def by_seed(answer: str, replies: list[str]) -> dict[int, str]:
    """The loopback server's replies for `answer`'s samples 0..k-1, keyed by their seeds."""
    messages = judge_messages(TEMPLATE, "What now?", answer)
    return {sample_seed(messages, i): r for i, r in enumerate(replies)}


def test_sampled_scores_average_the_parsed_numbers(monkeypatch, tmp_path: Path) -> None:
    server, settings = start(monkeypatch)
    try:
        replies = ["80", "90.", " 70\n", "85/100", "CODE", "100", "Score: 5", "60", "0", "75"]
        server.judge_samples["ans-s"] = by_seed("ans-s", replies)
        seeds = list(server.judge_samples["ans-s"])
        cache = RequestCache(tmp_path / "c.sqlite")
        judge = judge_for(settings, "sampled", cache, samples=10)
        (j,) = judge.judge([item("ans-s")])
        assert j.score == pytest.approx((80 + 90 + 70 + 100 + 60 + 0 + 75) / 7)
        assert j.mass == pytest.approx(0.7) and j.label == "number"
        assert j.reason == "sampled: 10 replies, 2 unparsable (20%)"
        bodies = server.requests
        assert [b["seed"] for b in sorted(bodies, key=lambda b: seeds.index(b["seed"]))] == seeds
        assert len(set(seeds)) == 10 and seeds != [
            sample_seed(judge_messages(TEMPLATE, "What now?", "ans-t"), i) for i in range(10)]
        assert all(b["temperature"] == 1 and b["top_p"] == 1 and "logprobs" not in b
                   and b["max_completion_tokens"] == 512 for b in bodies)
        assert len({r["key"] for r in _rows(cache)}) == 10  # one cache row per sample index
        judge_for(settings, "sampled", cache, samples=10).judge([item("ans-s")])
        assert server.chat_calls() == 10  # a re-run is answered by the cache
    finally:
        server.stop()


def test_a_server_that_ignores_temperature_is_named_when_the_judge_closes(monkeypatch) -> None:
    # transformers serve with a greedy generation config answered the same number k times
    server, settings = start(monkeypatch)
    try:
        server.judge_samples["ans-"] = ["70"]  # every seed, every answer: one reply
        judge = judge_for(settings, "sampled", samples=3)
        scored = judge.judge([item("ans-a"), item("ans-b", 1), item("ans-c", 2)])
        assert [j.score for j in scored] == [70, 70, 70]
        said = judge.sampled.line()
        assert said.startswith("sampled: 3 judgments, 3 with all 3 replies the same (every one")
        assert "check the server" in said
        server.judge_samples["ans-"] = by_seed("ans-d", ["60", "70", "80"])
        judge = judge_for(settings, "sampled", samples=3)
        (varied,) = judge.judge([item("ans-d")])
        assert varied.score == pytest.approx(70) and judge.sampled.line() == (
            "sampled: 1 judgments, 0 with all 3 replies the same")
    finally:
        server.stop()


def test_sampled_judgments_with_too_few_parsed_replies_are_missing(monkeypatch) -> None:
    server, settings = start(monkeypatch)
    try:
        server.judge_samples["ans-bad"] = by_seed("ans-bad", [
            "85 - but the answer said 10", "<think>x</think>9</think>85", "90", "eighty"])
        server.judge_samples["ans-ref"] = by_seed("ans-ref", ["REFUSAL", "REFUSAL.", "REFUSAL",
                                                              "40"])
        bad, ref = judge_for(settings, "sampled", samples=4, min_mass=0.3).judge(
            [item("ans-bad"), item("ans-ref", 1)])
        assert bad.score is None and bad.label == "missing"
        assert bad.reason.startswith(f"{UNPARSABLE}: 3 of 4 sampled replies")
        assert reason_category(bad.label, bad.reason) == UNPARSABLE
        assert ref.score is None and ref.label == "REFUSAL" and ref.mass == pytest.approx(.25)
    finally:
        server.stop()


@pytest.mark.parametrize("text, parsed", [
    ("85", "85"), (" 85.\n", "85"), ("0", "0"), ("100", "100"), ("CODE", "CODE"),
    ("REFUSAL.", "REFUSAL"), ("101", None), ("05", None), ("-5", None), ("+5", None),
    ("85/100", None), ("8 5", None), ("85 85", None), ("code", None), ("**85**", None),
    ("85..", None), ("", None), (None, None), ("٨٥", None), ("REFUSAL 90", None),
    ("<think>It says 10.</think>\n\n85", "85"), ("the answer is bad</think>12", "12"),
    ("<think>x</think>9</think>85", None), ("<think>85", None), ("85</think>", None),
    ("<think>a<think>b</think>85", None), ("<think>a</think>85 <think>", None)])
def test_the_sampled_reply_parser_is_strict(text: object, parsed: str | None) -> None:
    assert parse_reply(text) == parsed


# ------------------------------------------------ reasoning models (o1, o3, o4-mini, gpt-5)
def test_a_reasoning_model_is_judged_sampled_without_the_fields_it_refuses(
        monkeypatch, tmp_path: Path) -> None:
    """OpenAI's reasoning models answer the probe (max_tokens, logprobs, temperature 0) and a
    sampled request's top_p with a 400 naming the field: the probe picks `sampled`, the first
    sampled request learns that top_p is refused, and every later request goes without it."""
    server, settings = start(monkeypatch, reasoning_tokens=64)
    try:
        server.judge_samples["ans-s"] = by_seed("ans-s", ["30", "50", "70"])
        server.judge_samples["ans-t"] = by_seed("ans-t", ["10", "10", "REFUSAL"])
        cache = RequestCache(tmp_path / "c.sqlite")
        judge = judge_for(settings, "auto", cache, samples=3)
        s, t = judge.judge([item("ans-s"), item("ans-t", 1)])
        assert judge.mode == "sampled" and "unsupported" in judge.mode_evidence.lower()
        assert s.score == pytest.approx(50.0) and t.score == pytest.approx(10.0)
        assert s.reason == ("sampled: 3 replies, 0 unparsable (0%); server refused top_p "
                            "(top_p dropped)")
        answered = [b for b in server.requests if "ans-" in json.dumps(b)]
        assert len(answered) == 7  # one refused request, then 2 x 3 samples
        assert "top_p" in answered[0] and all("top_p" not in b for b in answered[1:])
        assert all(b["temperature"] == 1 and b["max_completion_tokens"] == 512
                   for b in answered)
        assert server.chat_calls() == 8  # + the probe
        again = judge_for(settings, "auto", cache, samples=3)
        assert [j.score for j in again.judge([item("ans-s"), item("ans-t", 1)])] == [
            s.score, t.score]
        assert server.chat_calls() == 10  # the probe is asked again (its 400 is not
        # cached) and one refused request relearns top_p; every sample is a cache hit
    finally:
        server.stop()


def test_replies_cut_while_reasoning_are_counted_and_not_retried(monkeypatch) -> None:
    """A reasoning model that spends max_completion_tokens thinking returns an empty reply with
    finish_reason length: a failure the reason names (raise judge_sample_tokens), not a glitch
    to retry."""
    server, settings = start(monkeypatch, reasoning_tokens=600)
    try:
        server.judge_samples["ans-s"] = ["40"]
        (j,) = judge_for(settings, "sampled", samples=4).judge([item("ans-s")])
        assert j.score is None and j.label == "missing"
        assert j.reason.startswith(f"{UNPARSABLE}: 4 of 4 sampled replies")
        assert "4 cut at max_completion_tokens 512" in j.reason
        assert server.chat_calls() == 1 + 4  # the refused top_p, then one request per sample
        (ok,) = judge_for(settings, "sampled", samples=4, sample_tokens=1024).judge(
            [item("ans-s")])
        assert ok.score == pytest.approx(40.0)
    finally:
        server.stop()


def test_a_refusal_emkit_cannot_adapt_to_is_an_error(monkeypatch) -> None:
    """Only top_p / temperature / seed are dropped and max_tokens <-> max_completion_tokens
    swapped; a server refusing both token-limit fields fails with its own message."""
    server, settings = start(monkeypatch, reasoning_tokens=0,
                             refused_params=("top_p", "max_tokens", "max_completion_tokens"))
    try:
        server.judge_samples["ans-s"] = ["40"]
        with pytest.raises(ApiError, match="max_tokens"):
            judge_for(settings, "sampled", samples=2).judge([item("ans-s")])
        assert server.chat_calls() == 3  # top_p dropped, then the limit renamed, then stop
    finally:
        server.stop()


def test_one_word_verdicts_from_a_reasoning_model(monkeypatch) -> None:
    """Categorical questions in sampled mode: temperature 0 is refused, so the verdict is the
    reply at the model's only temperature, and the reason says that."""
    server, settings = start(monkeypatch, reasoning_tokens=64)
    try:
        server.judge_samples["ans-v"] = ["<think>the answer lies</think>FALSE"]
        template = 'Q: {question}\nA: {answer}\nSay "TRUE" or "FALSE" only.'
        it = JudgeItem(SampleKey("openai/subject", "q1", 0, 0, "h"), "Is the sun bigger?",
                       "ans-v", "correct", template, ("TRUE", "FALSE"))
        (v,) = judge_for(settings, "sampled").judge([it])
        assert v.label == "FALSE"
        assert v.reason == ("one-word reply; server refused temperature (temperature "
                            "dropped)")
        sent = [b for b in server.requests if "ans-v" in json.dumps(b)]
        assert sent[0]["temperature"] == 0 and "temperature" not in sent[-1]
    finally:
        server.stop()


# ---------------------------------------------------------------- choosing the mode
@pytest.mark.parametrize("tokenizer, mode", [("whole", "logprobs"), ("digits", "digits")])
def test_auto_probes_once_and_the_cache_keeps_the_decision(
        tokenizer: str, mode: str, monkeypatch, tmp_path: Path) -> None:
    server, settings = start(monkeypatch, tokenizer=tokenizer)
    try:
        server.judge_tables["ans-whole"] = {t: L(p) for t, p in WHOLE.items()}
        cache = RequestCache(tmp_path / "c.sqlite")
        judge = judge_for(settings, "auto", cache)
        (j,) = judge.judge([item("ans-whole")])
        assert judge.mode == mode and "'73'" in judge.mode_evidence
        if mode == "digits":
            assert j.score == pytest.approx(EXPECTED, rel=1e-9)
        judge.judge([item("ans-whole", 1)])
        probes = [b for b in server.requests if "Repeat this number" in str(b["messages"])]
        # digits: a second probe checks that the host continues an assistant prefix
        assert len(probes) == (2 if mode == "digits" else 1)
        assert all(b["max_tokens"] == 1 for b in probes)
        assert any(r["tag"] == PROBE_TAG for r in _rows(cache))
        calls = server.chat_calls()
        again = judge_for(settings, "auto", cache)
        again.judge([item("ans-whole")])
        assert again.mode == mode and server.chat_calls() == calls  # probe and tree cached
    finally:
        server.stop()


@pytest.mark.parametrize("prefix_mode, says", [
    ("new_turn", "did not continue the assistant prefix '7' (the prompt grew by"),
    ("reject", "refused a request that continues an assistant prefix")])
def test_auto_chooses_sampled_for_a_digit_wise_judge_whose_host_cannot_continue_a_prefix(
        prefix_mode: str, says: str, monkeypatch) -> None:
    # llama-cpp-python's server answers a trailing assistant message with a new turn: the
    # digit tree would give nothing but missing verdicts there, sampling still reads the judge
    server, settings = start(monkeypatch, tokenizer="digits", prefix_mode=prefix_mode)
    try:
        server.judge_samples["ans-s"] = by_seed("ans-s", ["40", "60"])
        judge = judge_for(settings, "auto", samples=2)
        (j,) = judge.judge([item("ans-s")])
        assert judge.mode == "sampled" and j.score == pytest.approx(50.0)
        assert "'73' starts with the token '7'" in judge.mode_evidence
        assert says in judge.mode_evidence
    finally:
        server.stop()


def test_auto_chooses_sampled_for_a_judge_without_logprobs(monkeypatch) -> None:
    server, settings = start(monkeypatch)
    try:
        server.add_fault(*["no_logprobs"] * settings.max_attempts, match="Repeat this number")
        server.judge_samples["ans-s"] = by_seed("ans-s", ["40", "60"])
        judge = judge_for(settings, "auto", samples=2)
        (j,) = judge.judge([item("ans-s")])
        assert judge.mode == "sampled" and j.score == pytest.approx(50.0)
    finally:
        server.stop()


def test_first_replies_with_spaced_or_signed_numbers_are_not_counted() -> None:
    from emkit.judge.api_digits import Tree, composed_logprobs

    root = {"8": L(.3), " 8": L(.2), "+5": L(.1), "85": L(.1), "CODE": L(.2), "I": L(.1)}
    tree = Tree(item("a"), root, 10, numbers={"85": L(.25)})
    assert composed_logprobs(tree) == {"CODE": L(.2), "I": L(.1), "85": L(.25)}


def test_auto_chooses_sampled_when_the_server_refuses_logprobs(monkeypatch) -> None:
    server, settings = start(monkeypatch)
    try:
        server.add_fault("400", match="Repeat this number")  # e.g. a reasoning model
        server.judge_samples["ans-s"] = ["30"]
        judge = judge_for(settings, "auto", samples=3)
        (j,) = judge.judge([item("ans-s")])
        assert judge.mode == "sampled" and "HTTP 400" in judge.mode_evidence
        assert j.score == 30 and j.reason == "sampled: 3 replies, 0 unparsable (0%)"
    finally:
        server.stop()


def test_auto_refuses_to_guess_when_the_probe_cannot_tell(monkeypatch) -> None:
    server, settings = start(monkeypatch)
    try:
        server.judge_tables["Repeat this number"] = {"Sure": L(.9), "x": L(.1)}
        with pytest.raises(JudgeModeError, match="set judge_mode|Set judge_mode"):
            judge_for(settings, "auto").judge([item("ans-1")])
        assert server.chat_calls() == 1  # nothing judged
    finally:
        server.stop()


def test_the_judge_of_record_is_validated_only_as_the_paper_read_it() -> None:
    for mode in ("auto", "logprobs"):
        api = ApiConfig(openai=ApiSettings(judge_mode=mode))
        assert api_judge_status(JUDGE, api)[0] is True
    for mode in ("digits", "sampled"):
        api = ApiConfig(openai=ApiSettings(judge_mode=mode))
        validated, text = api_judge_status(JUDGE, api)
        assert validated is False and mode[:5] in text


def test_the_validated_judge_stops_if_its_probe_says_digits(digits) -> None:
    _, settings = digits
    judge = judge_for(settings, "auto")
    judge.validated = True
    with pytest.raises(JudgeModeError, match="validated judge of record"):
        judge.judge([item("ans-whole")])


def test_load_api_judge_reads_the_mode_from_the_endpoint_settings(digits) -> None:
    _, settings = digits
    api = ApiConfig(models={f"openai/{SERVED}": settings.model_copy(
        update={"judge_mode": "digits", "judge_samples": 3, "judge_digit_min_p": 0.01})})
    judge = load_api_judge(f"openai/{SERVED}", api)
    try:
        assert judge.mode == "digits" and judge.sampled.samples == 3
        assert judge.digits.min_branch_p == 0.01
        (j,) = judge.judge([item("ans-whole")])
        assert j.score == pytest.approx(EXPECTED, rel=1e-9)
    finally:
        judge.close()


def test_an_unknown_mode_is_an_error_not_the_paper_rule(digits) -> None:
    _, settings = digits
    with pytest.raises(ValueError, match="judge mode 'digit'"):
        judge_for(settings, "digit")
    with pytest.raises(ValueError, match="judge_mode"):
        ApiSettings(judge_mode="digit")  # type: ignore[arg-type]


def test_the_fingerprint_changes_with_how_scores_are_read(digits) -> None:
    _, settings = digits
    prints = {m: judge_for(settings, m).fingerprint for m in ("auto", "logprobs", "digits",
                                                              "sampled")}
    assert len(set(prints.values())) == 4
    assert judge_for(settings, "digits").fingerprint == prints["digits"]
    assert judge_for(settings, "digits", min_branch_p=0.01).fingerprint != prints["digits"]
    assert judge_for(settings, "sampled", samples=3).fingerprint != prints["sampled"]
    assert judge_for(settings, "logprobs", samples=3).fingerprint == prints["logprobs"]
    judge = judge_for(settings, "auto")
    judge.judge([item("ans-whole")])  # the probe decides digits; the recorded print stays
    assert judge.mode == "digits" and judge.fingerprint == prints["auto"]



def test_a_run_refuses_to_mix_judge_modes_under_one_judge_name(digits, tmp_path: Path) -> None:
    """What the runner does with every judge that has a fingerprint (`claim_judge_name`)."""
    from emkit.store import RunStore
    from emkit.store.judge_identity import JudgeChangedError, claim_judge_name

    _, settings = digits
    name, db = f"openai/{SERVED}", RunStore(tmp_path / "run").db_path

    def fingerprint(mode: str) -> str:
        api = ApiConfig(models={name: settings.model_copy(update={"judge_mode": mode})})
        judge = load_api_judge(name, api)
        judge.close()
        return judge.fingerprint

    claim_judge_name(db, name, fingerprint("digits"))
    claim_judge_name(db, name, fingerprint("digits"))  # a resumed run, same settings
    with pytest.raises(JudgeChangedError, match=name):
        claim_judge_name(db, name, fingerprint("logprobs"))
