"""`analysis_guidance: sections`: the skeleton grammar, what it accepts and rejects, the placeholder check under a
forced skeleton, the vLLM regex around one call, guided generation on the tiny model, config errors."""

import re
from types import SimpleNamespace

import pytest

from melrl.method import guidance
from melrl.method.parsing import MetaExperienceFormatError, parse_meta_experience, template_copies
from melrl.method.guidance import SectionGuidance, section_chars, skeleton, skeleton_regex
from melrl.method.prompts import ANALYSIS_TEMPLATES, PAPER_ANALYSIS_TEMPLATE

xgr = pytest.importorskip("xgrammar")

# What a policy writes under the skeleton: the prompt's headings verbatim, short text in between (at most
# SECTION_CHARS characters a section, so that the test grammars compile in about a second each).
SECTION_CHARS = 64
PAPER_BODIES = [
    "• Failure Point: It added quantities in mixed units.",
    "• Robustness Factor: It named every unit first.",
    "• Review: I combined unlike things.\n• Action: units first.",
    "• [Unit check]: If units differ, then convert first.",
]
COMPACT_BODIES = [
    "It added the quantities unconverted.",
    "Trusting the surface form of the numbers.",
    "Naming the unit of every quantity first.",
    "I added unlike things; I will write units first.",
    "- [Unit check]: If units differ, then convert first.",
]
BODIES = {"paper": PAPER_BODIES, "compact": COMPACT_BODIES}


def guided_text(analysis_prompt, bodies=None, headings=None):
    headings = skeleton(analysis_prompt) if headings is None else headings
    bodies = BODIES[analysis_prompt] if bodies is None else bodies
    return "\n".join(f"{h}\n{b}" for h, b in zip(headings, bodies, strict=True))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def grammars(tokenizer):
    """The skeleton grammar of each prompt at SECTION_CHARS characters a section, compiled for the real tokenizer."""
    regexes = {p: skeleton_regex(p, SECTION_CHARS) for p in ANALYSIS_TEMPLATES}
    return {p: (rx, guidance.compile_regex(rx, tokenizer)) for p, rx in regexes.items()}


def accepts(grammars, analysis_prompt, text):
    """Whether the grammar takes `text` as a whole analysis (and Python's `re` agrees: the regex is portable)."""
    regex, compiled = grammars[analysis_prompt]
    matcher = xgr.GrammarMatcher(compiled)
    verdict = matcher.accept_string(text) and matcher.is_completed()
    assert verdict == bool(re.fullmatch(regex, text)), text
    return verdict


def test_skeleton_is_the_prompts_headings_in_order():
    paper = skeleton("paper")
    assert [h.split(" (")[0] for h in paper] == [
        "1. Failure Resolution Path & Error Pattern Recognition", "2. Analysis of Success Factors",
        "3. First-Person Reflective Summary", "4. Subject Heuristics"]
    assert all(f"\n{h}\n" in PAPER_ANALYSIS_TEMPLATE for h in paper)
    assert skeleton("compact") == ("## Failure Point", "## Latent Cognitive Pattern", "## Success Factors",
                                   "## Reflective Summary", "## Heuristics")
    with pytest.raises(ValueError, match="unknown analysis prompt"):
        skeleton("verbatim")


@pytest.mark.parametrize("analysis_prompt", sorted(ANALYSIS_TEMPLATES))
def test_grammar_accepts_a_well_formed_analysis_that_parses(grammars, analysis_prompt):
    text = guided_text(analysis_prompt)
    assert accepts(grammars, analysis_prompt, text)
    parsed = parse_meta_experience(text)
    assert parsed.failure_point.startswith("It added")
    assert parsed.heuristics == [BODIES[analysis_prompt][-1][2:]]
    # the bodies are free text: several lines, blank ones, indents, unicode, a heading name inside a sentence
    bodies = BODIES[analysis_prompt][:]
    bodies[0] = "- Mixed units; see the Heuristics.\n\n  θ ≤ 2π"
    assert accepts(grammars, analysis_prompt, guided_text(analysis_prompt, bodies))


@pytest.mark.parametrize("analysis_prompt", sorted(ANALYSIS_TEMPLATES))
def test_grammar_rejects_missing_misordered_or_empty_sections(grammars, analysis_prompt):
    headings, bodies = list(skeleton(analysis_prompt)), BODIES[analysis_prompt]
    missing = guided_text(analysis_prompt, bodies[:2] + bodies[3:], headings[:2] + headings[3:])
    swapped = headings[:]
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert not accepts(grammars, analysis_prompt, missing)
    assert not accepts(grammars, analysis_prompt, guided_text(analysis_prompt, headings=swapped))
    assert not accepts(grammars, analysis_prompt, guided_text(analysis_prompt)[1:])  # a heading not verbatim
    assert not accepts(grammars, analysis_prompt, "Let me compare.\n" + guided_text(analysis_prompt))  # preamble
    empty = bodies[:]
    empty[2] = " spaces first"
    assert not accepts(grammars, analysis_prompt, guided_text(analysis_prompt, empty))
    # a section's budget: SECTION_CHARS characters fit, one more does not
    assert accepts(grammars, analysis_prompt, guided_text(analysis_prompt, ["x" * SECTION_CHARS] * len(headings)))
    too_long = ["x" * (SECTION_CHARS + 1)] + bodies[1:]
    assert not accepts(grammars, analysis_prompt, guided_text(analysis_prompt, too_long))


def test_section_budget_is_the_token_budget_in_characters_shared_by_the_sections():
    for analysis_prompt in ANALYSIS_TEMPLATES:
        n, headings = len(skeleton(analysis_prompt)), sum(len(h) + 2 for h in skeleton(analysis_prompt))
        chars = section_chars(1024, analysis_prompt)
        assert n * chars + headings <= 1024 * guidance.CHARS_PER_TOKEN < n * (chars + 1) + headings
    assert section_chars(1, "paper") == guidance.MIN_SECTION_CHARS
    g = SectionGuidance.for_budget("compact", 512)
    assert g.regex == skeleton_regex("compact", section_chars(512, "compact"))
    assert "{0,%d}" % (section_chars(512, "compact") - 1) in g.regex


def paper_format_bodies():
    """The paper's output format, section by section, as the prompt shows it (what a copying model writes)."""
    fmt = PAPER_ANALYSIS_TEMPLATE.split("Output Format (Strict Adherence Required)\n")[1].split("\n\nHere the")[0]
    parts = re.split("|".join(re.escape(h) for h in skeleton("paper")), fmt)[1:]
    return [part.strip() for part in parts]


@pytest.mark.parametrize("copy", ["whole", "first line", "two lines", "dashes", "bold labels", "note line"])
def test_placeholder_copies_in_the_skeleton_are_rejected(copy):
    bodies = paper_format_bodies()
    if copy == "first line":
        bodies = [b.splitlines()[0] for b in bodies]
    elif copy == "two lines":
        bodies = ["\n".join(b.splitlines()[:2]) for b in bodies]
    elif copy == "dashes":
        bodies = [b.replace("•", "-") for b in bodies]
    elif copy == "bold labels":
        bodies = [re.sub(r"• ([^:\n]+):", r"• **\1:**", b) for b in bodies]
    elif copy == "note line":  # the heading's parenthetical note repeated, then the prompt's lines
        bodies = [f"{h[h.index('('):]}\n{b}" for h, b in zip(skeleton("paper"), bodies)]
    text = guided_text("paper", bodies)
    # the grammar cannot tell a copy from an analysis (Python's `re` stands in for xgrammar: they agree above)
    assert re.fullmatch(skeleton_regex("paper", 1000), text)
    with pytest.raises(MetaExperienceFormatError) as err:
        parse_meta_experience(text)
    assert set(err.value.empty) == {"Failure Point", "Success Factors", "Reflective Summary", "Heuristics"}
    assert {"Failure Point", "Success Factors", "Reflective Summary", "Heuristics"} <= set(template_copies(text))


def test_a_copied_line_does_not_hide_the_models_own_text():
    bodies = paper_format_bodies()
    own = [f"{b.splitlines()[0]}\n{mine}" for b, mine in zip(bodies, PAPER_BODIES)]
    parsed = parse_meta_experience(guided_text("paper", own))
    assert template_copies(guided_text("paper", own)) == []
    assert "I combined unlike things." in parsed.reflective_summary
    assert parsed.heuristics == [PAPER_BODIES[-1][2:]]  # the copied example rule is dropped, the own one kept
    # the compact prompt's description lines are placeholders too
    compact = ANALYSIS_TEMPLATES["compact"]
    descriptions = [compact.split(f"{h}\n")[1].split("\n## ")[0].split("\n\nHere")[0] for h in skeleton("compact")]
    with pytest.raises(MetaExperienceFormatError):
        parse_meta_experience(guided_text("compact", descriptions))


class FakeVLLM:
    """The attributes of TRL's VLLMGeneration that the analysis call sets and restores (`generation_kwargs`: the
    user's, which go into vLLM's sampling parameters after TRL's own)."""

    def __init__(self, generation_kwargs=None):
        self.structured_outputs_regex = "rollout-regex"
        self.max_completion_length = 48
        self.generation_kwargs = generation_kwargs or {}


def fake_vllm_trainer(seen, generation_kwargs=None):
    """A vLLM trainer as TRL builds one: no `generation_config` and no `generation_kwargs` of its own."""
    vllm = FakeVLLM(generation_kwargs)

    def generate_single_turn(prompt_ids, images, fields, n):
        seen.append((vllm.structured_outputs_regex, vllm.max_completion_length, dict(vllm.generation_kwargs)))
        if prompt_ids[0] == [666]:
            raise RuntimeError("engine failed")
        return [[7, 8] for _ in prompt_ids], None

    return SimpleNamespace(accelerator=SimpleNamespace(num_processes=1, process_index=0), use_vllm=True,
                           vllm_generation=vllm, _generate_single_turn=generate_single_turn)


def test_vllm_regex_is_set_for_the_analysis_call_only():
    from melrl.training.generation import generate_distributed

    seen = []
    trainer = fake_vllm_trainer(seen)
    g = SectionGuidance.for_budget("paper", 256)
    assert generate_distributed(trainer, [[1], [2]], 256, guidance=g) == [[7, 8], [7, 8]]
    generate_distributed(trainer, [[1]], 32)  # unguided: the rollouts' setting is left alone
    assert seen == [(g.regex, 256, {}), ("rollout-regex", 32, {})]
    assert (trainer.vllm_generation.structured_outputs_regex, trainer.vllm_generation.max_completion_length) == \
        ("rollout-regex", 48)
    with pytest.raises(RuntimeError, match="engine failed"):
        generate_distributed(trainer, [[666]], 256, guidance=g)
    assert trainer.vllm_generation.structured_outputs_regex == "rollout-regex"


def test_a_max_tokens_in_the_users_vllm_kwargs_gives_way_to_the_calls_budget():
    from melrl.training.generation import generate_distributed

    seen = []
    trainer = fake_vllm_trainer(seen, generation_kwargs={"max_tokens": 99, "stop_token_ids": [2]})
    generate_distributed(trainer, [[1]], 32)
    assert seen == [("rollout-regex", 32, {"max_tokens": 32, "stop_token_ids": [2]})]
    assert trainer.vllm_generation.generation_kwargs == {"max_tokens": 99, "stop_token_ids": [2]}


def test_guided_generation_on_the_tiny_model_follows_the_skeleton(tiny_model_dir, tmp_path, tokenizer):
    from melrl.method.prompts import analysis_text, render
    from melrl.training.generation import analysis_guidance, generate_distributed
    from tests.test_trainer import make_trainer

    trainer = make_trainer(tiny_model_dir, tmp_path, analysis_guidance="sections", analysis_prompt="paper",
                           analysis_max_new_tokens=64)
    g = analysis_guidance(trainer)
    assert g is analysis_guidance(trainer) and g.analysis_prompt == "paper"
    prompts = [render(tokenizer, analysis_text(f"What is {i} + {i}?", "1", "2", "compact")) for i in (1, 2)]
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    prompt_ids[1] = prompt_ids[1][:-5]  # different lengths: left padding
    outputs = generate_distributed(trainer, prompt_ids, 24, guidance=g)
    first = skeleton("paper")[0] + "\n"
    for ids in outputs:
        assert 0 < len(ids) <= 24
        text = tokenizer.decode(ids, skip_special_tokens=True)
        assert text.startswith(first) or first.startswith(text), text
        matcher = xgr.GrammarMatcher(g.compiled(tokenizer, vocab_size=trainer.model.config.vocab_size,
                                                stop_token_ids=trainer.eos_token_ids))
        assert all(matcher.accept_token(t) for t in ids)
    # unguided generation is untouched by the setting, and `none` builds no guidance
    assert analysis_guidance(SimpleNamespace(args=SimpleNamespace(analysis_guidance="none"))) is None


def test_config_checks(tmp_path, monkeypatch):
    from melrl.training.config import MELConfig

    cpu = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[])
    assert MELConfig(**cpu).analysis_guidance == "none"
    assert MELConfig(**cpu, analysis_guidance="sections").analysis_guidance == "sections"
    with pytest.raises(ValueError, match=r"analysis_guidance: 'grammar' is not one of \('none', 'sections'\)"):
        MELConfig(**cpu, analysis_guidance="grammar")
    monkeypatch.setattr(guidance, "xgrammar_available", lambda: False)
    with pytest.raises(ValueError, match=re.escape("xgrammar is not installed: pip install -e '.[guidance]'")):
        MELConfig(**cpu, analysis_guidance="sections")
    # vLLM brings its own structured outputs; without the loop nothing is guided
    assert MELConfig(**cpu, analysis_guidance="sections", use_vllm=True).use_vllm
    assert MELConfig(**cpu, analysis_guidance="sections", meta_experience=False).analysis_guidance == "sections"
    assert MELConfig(**cpu).analysis_guidance == "none"
