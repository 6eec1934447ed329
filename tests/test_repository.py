"""The tree explains itself: the docs name files that exist, and helpers keep their documented shapes."""

import math
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import aggregate  # noqa: E402

DOCS = ["docs/ARCHITECTURE.md", "docs/TINY_RECIPE.md", "README.md"]
TOP_LEVEL = ("dimr", "workflow", "tests", "tools", "ablations", "config", "slurm", "docs", "benchmarks")
# A repository path: a top-level folder, then anything up to a space, quote, bracket or a drawn arrow.
PATH = re.compile(rf"(?<![\w./-])(?:{'|'.join(TOP_LEVEL)})/[^\s`'\"(),─]*")
INLINE = re.compile(r"`([^`\n]+)`")
FENCED = re.compile(r"^```.*?^```", re.M | re.S)
PLACEHOLDER = ("<", "{", "*")  # ablations/<study>.yaml, results/<study>.{md,tex}, reports/<study>/*.png


def named_paths(text: str) -> set[str]:
    """Repository paths in the backticked spans and code blocks of a Markdown text, placeholders left out."""
    code = [*FENCED.findall(text), *INLINE.findall(FENCED.sub("", text))]
    found = {p.rstrip(".:;") for span in code for p in PATH.findall(span)}
    return {p for p in found if not any(c in p for c in PLACEHOLDER)}


def test_named_paths_reads_code_spans_and_blocks():
    text = ("See `dimr/io.py` and `python workflow/scripts/submit.py -- x`, not dimr/prose.py.\n"
            "```\nablations/<study>.yaml ──(workflow/rules/common.smk)──> runs/x\n```\n")
    assert named_paths(text) == {"dimr/io.py", "workflow/scripts/submit.py", "workflow/rules/common.smk"}


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_the_docs_name_exists(doc):
    paths = named_paths((REPO / doc).read_text())
    assert paths, f"{doc} names no repository path: did the pattern break?"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_flatten_joins_nested_keys_with_dots_and_writes_lists_as_json():
    protocol = {"num_samples": 500, "meaningful": True, "ref": None, "fid": math.pi,
                "sampler": {"name": "dpmpp-2m", "steps": 10, "guidance": {"scale": 1.5, "ramp": [0, 1]}},
                "seeds": [0, 1, 2], "empty": {}}
    assert aggregate.flatten(protocol) == {
        "num_samples": 500, "meaningful": True, "ref": None, "fid": math.pi,
        "sampler.name": "dpmpp-2m", "sampler.steps": 10,
        "sampler.guidance.scale": 1.5, "sampler.guidance.ramp": "[0, 1]",
        "seeds": "[0, 1, 2]",
    }
    flat = aggregate.flatten(protocol)
    assert type(flat["num_samples"]) is int and type(flat["meaningful"]) is bool  # no numpy scalars


def test_comments_cite_papers_and_code_not_the_teams_notes():
    # The shipped tree is read by users who do not have the team's technical notes: a comment that
    # cites them ("SPEC §3") points nowhere; it cites the paper's section or the official code instead.
    tracked = [p for top in TOP_LEVEL for p in (REPO / top).rglob("*")
               if p.suffix in {".py", ".yaml", ".smk", ".md", ".json"} and ".venv" not in p.parts
               and p != Path(__file__).resolve()]  # this test names the word it looks for
    tracked += [REPO / "Snakefile", REPO / "README.md"]
    citing = sorted(str(p.relative_to(REPO)) for p in tracked if re.search(r"\bSPEC\b", p.read_text()))
    assert tracked and not citing, f"these files cite the team's notes instead of a paper: {citing}"
