"""Skill folders and backend configs for scripts/real-backend.

claude-skills-mcp-backend 1.0.6 finds local skills as every `SKILL.md` under a
`{"type": "local", "path": DIR}` source (`Path(DIR).rglob("SKILL.md")`), each with YAML front
matter whose `name:` and `description:` lines it reads (`skill_loader.parse_skill_md`); the
other files of a skill's folder are its documents. Its config JSON is merged over the
package's defaults (`config.load_config`), so `skill_sources` replaces the GitHub sources.

Usage: python make_skills.py skills DIR N
       python make_skills.py config OUT --skills DIR --model MODEL_DIR
"""

import argparse
import json
import os

SKILLS = [
    (
        "pdf-table-extraction",
        "Extract tables from PDF files into CSV or pandas DataFrames, handling multi-page tables and merged cells",
        "Use pdfplumber to open the file, find table bounding boxes per page, then join rows across pages.",
    ),
    (
        "git-bisect-regressions",
        "Find the commit that introduced a regression with git bisect, including automated bisect run scripts",
        "Mark a good and a bad commit, write a script that exits 0 on good, run `git bisect run`.",
    ),
    (
        "csv-data-cleaning",
        "Clean messy CSV data: normalise headers, fix encodings, deduplicate rows and coerce column types",
        "Read with an explicit encoding, strip header whitespace, drop exact duplicates, then cast types.",
    ),
    (
        "docker-image-slimming",
        "Make Docker images smaller with multi-stage builds, slim base images and layer ordering",
        "Build in one stage, copy only the artefacts into a slim runtime stage, order layers by change rate.",
    ),
    (
        "sql-query-tuning",
        "Speed up slow SQL queries by reading EXPLAIN plans, adding indexes and rewriting joins",
        "Run EXPLAIN ANALYZE, look for sequential scans on large tables, add the index the filter needs.",
    ),
]


def make_skills(directory, count):
    os.makedirs(directory, exist_ok=True)
    if count > len(SKILLS):
        raise SystemExit(f"at most {len(SKILLS)} skills")
    for name, description, body in SKILLS[:count]:
        folder = os.path.join(directory, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "SKILL.md"), "w") as f:
            f.write(f"---\nname: {name}\ndescription: {description}\n---\n\n# {name}\n\n{body}\n")
        with open(os.path.join(folder, "notes.txt"), "w") as f:
            f.write(f"Extra notes for {name}.\n")


def make_config(out, skills, model):
    config = {
        "skill_sources": [{"type": "local", "path": os.path.abspath(skills)}],
        "embedding_model": os.path.abspath(model),
        "auto_update_enabled": False,
    }
    with open(out, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("skills")
    s.add_argument("directory")
    s.add_argument("count", type=int)
    c = sub.add_parser("config")
    c.add_argument("out")
    c.add_argument("--skills", required=True)
    c.add_argument("--model", required=True)
    options = parser.parse_args()
    if options.what == "skills":
        make_skills(options.directory, options.count)
    else:
        make_config(options.out, options.skills, options.model)


if __name__ == "__main__":
    main()
