"""``crm-events``: generate the contract documents and check them against the published ones.

crm-events generate --out shared/events/schemas   # JSON Schema per type/version + AsyncAPI
crm-events check --published shared/events/schemas  # CI: fails on an incompatible change
crm-events list                                    # every type, version and topic
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crm_events import contract, registry
from crm_events.envelope import context_topic, public_topic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crm-events", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write JSON Schemas, index.json and asyncapi.json")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument(
        "--force",
        action="store_true",
        help="overwrite a published schema even if the change is incompatible (never on main)",
    )
    chk = sub.add_parser("check", help="fail if a published schema changed incompatibly")
    chk.add_argument("--published", type=Path, required=True)
    sub.add_parser("list", help="list event types")
    args = parser.parse_args(argv)

    if args.command == "list":
        for spec in registry.specs():
            topics = [context_topic(spec.context)] + ([public_topic()] if spec.public else [])
            print(f"{spec.type}\tv{spec.version}\t{', '.join(topics)}\t{spec.summary}")
        return 0

    if args.command == "generate":
        out: Path = args.out
        if (out / contract.INDEX_FILE).exists() and not args.force:
            breaking = [p for p in contract.check(registry, out) if "out of date" not in p]
            if breaking:
                _report("refusing to overwrite published schemas", breaking)
                return 1
        changed = contract.write(contract.generate(registry), out)
        for path in changed:
            print(f"wrote {path}")
        print(f"{len(changed)} file(s) changed under {out}")
        return 0

    problems = contract.check(registry, args.published)
    problems += list(contract.examples_problems(registry))
    if problems:
        _report("event contract check failed", problems)
        return 1
    count = sum(1 for _ in registry.all_versions())
    print(json.dumps({"ok": True, "schemas": count, "published": str(args.published)}))
    return 0


def _report(title: str, problems: list[str]) -> None:
    print(f"{title}:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
