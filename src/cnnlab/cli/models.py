"""``cnnlab models``: the registered models and their parameter counts."""

# cnnlab.models imports torch (~1.3 s): it is imported inside the command function, so that parsing,
# --help and argument errors answer without it.

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models and their parameter counts")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from cnnlab.models import count_parameters, create_model, list_models, model_summary

    for name in list_models():
        print(f"{name:<16} {count_parameters(create_model(name)):>9,} params  {model_summary(name)}")
    return 0
