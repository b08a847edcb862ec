"""``cnnlab models``: the registered models, their parameter counts, and the shipped pretrained weights."""

# cnnlab.models imports torch (~1.3 s): it is imported inside the command function, so that parsing,
# --help and argument errors answer without it.

from __future__ import annotations

from dataclasses import asdict

from cnnlab.cli.common import add_json
from cnnlab.output import json_text


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models, their parameter counts and the pretrained weights",
                       description="Every registered model with its parameter count, then the pretrained weights "
                                   "shipped with cnnlab: their test accuracy (what 'cnnlab evaluate --pretrained "
                                   "MODEL' measures), the recipe and the command that reproduces them.")
    add_json(p, "the models and the pretrained weights")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from cnnlab.models import count_parameters, create_model, list_models, model_summary
    from cnnlab.pretrained import pretrained_entries

    models = [{"name": n, "parameters": count_parameters(create_model(n)), "summary": model_summary(n)}
              for n in list_models()]
    weights = pretrained_entries()
    if args.json:
        print(json_text({"models": models, "pretrained": [asdict(w) for w in weights]}, indent=2))
        return 0
    for m in models:
        print(f"{m['name']:<16} {m['parameters']:>9,} params  {m['summary']}")
    if weights:
        print("\npretrained weights (cnnlab predict --model NAME, cnnlab evaluate --pretrained NAME, "
              "cnnlab.create_model(NAME, pretrained=True)):")
        for w in weights:
            print(f"  {w.model:<10} {w.dataset:<14} test accuracy {w.test_accuracy:.2f}%  recipe {w.recipe}, "
                  f"seed {w.seed}  ({w.file})")
            if w.command:  # the README and --help promise it (it was only in --json)
                print(f"  {'':<10} made by: {' '.join(str(w.command).split())}")
    return 0
