"""``cardiofusion recipe list`` / ``cardiofusion recipe run NAME --config FILE.yaml [--set key=value ...] --out DIR``."""

from __future__ import annotations

import argparse
import shlex


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recipe",
        help="list the registered recipes (whole methods) or run one from a YAML config",
        description="A recipe is a whole method (the reference pipeline, the demo, the fusion benchmark, "
        "cross-validation) with one typed config. 'recipe run' reads the config (unknown keys are refused), "
        "applies --set overrides, prints the resolved config and saves it as OUT/recipe.yaml, then runs. "
        "Re-running the same command reuses finished runs with unchanged settings and resumes interrupted ones; "
        "a changed config retrains what it changes.",
    )
    actions = p.add_subparsers(dest="recipe_command", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("list", help="the registered recipes, one line each")
    ls.set_defaults(func=run_list)
    r = actions.add_parser("run", help="run a recipe",
                           description="Run recipe NAME into --out with the settings of --config and --set.")
    r.add_argument("name", metavar="NAME", help="recipe name (see 'cardiofusion recipe list')")
    r.add_argument("--config", metavar="FILE.yaml", help="recipe settings (default: the recipe's defaults)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (dotted keys for nested ones, values read as YAML scalars); repeatable")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reused when re-run)")
    r.set_defaults(func=run_recipe)


def run_list(args: argparse.Namespace) -> int:
    from ..recipes import list_recipes

    recipes = list_recipes()
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        print(f"{r.name:<{width}}  {r.description}")
    return 0


def run_recipe(args: argparse.Namespace) -> int:
    from ..recipes import get_recipe, save_recipe_config
    from ..recipes.registry import recipe_yaml

    recipe = get_recipe(args.name)
    config = recipe.load_config(args.config, args.overrides)
    print(recipe_yaml(recipe.name, config), end="")
    path = save_recipe_config(recipe.name, config, args.out)
    print(f"# saved as {path}")
    command = (f"cardiofusion recipe run {shlex.quote(recipe.name)} --config {shlex.quote(str(path))} "
               f"--out {shlex.quote(str(args.out))}")
    recipe.run(config, args.out, command=command)
    return 0
