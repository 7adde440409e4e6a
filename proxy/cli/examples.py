"""The examples at the end of ``tunegate --help`` and of the main command groups' ``--help``."""

from __future__ import annotations

EXAMPLES: dict[str, str] = {
    "": """\
examples:
  tunegate serve --demo
  export TUNEGATE_URL=http://127.0.0.1:8000 TUNEGATE_ADMIN_KEY=tg-demo-admin
  tunegate alias list
  tunegate --output yaml alias show pudong-support
  KEY=$(tunegate key create --team airport-cs --name kiosk-1)
  tunegate apply tunegate.yaml --diff-exit-code
  eval "$(tunegate completion bash)\"""",
    "team": """\
examples:
  tunegate team create airport-cs
  tunegate team list
  tunegate team disable airport-cs""",
    "key": """\
examples:
  KEY=$(tunegate key create --team airport-cs --name kiosk-1)   # only the key on stdout
  tunegate key create --team finance --role finance --expires 2030-01-31
  tunegate key list --team airport-cs
  tunegate key revoke 12""",
    "alias": """\
examples:
  tunegate alias set pudong-support --upstream openai --model gpt-4o-mini --system-prompt "You answer ..."
  tunegate alias set pudong-support --split ft:gpt-4o-mini:pudong::abc=90 --split gpt-4o-mini=10
  tunegate alias history pudong-support
  tunegate alias rollback pudong-support v1 --reason "answers got worse\"""",
    "upstream": """\
examples:
  tunegate upstream set azure --base-url https://example.openai.azure.com/openai/v1 --api-key-env AZURE_KEY
  tunegate upstream list""",
    "apply": """\
examples:
  tunegate apply tunegate.yaml --dry-run
  tunegate apply tunegate.yaml --diff-exit-code   # in CI: exit 1 when the gateway differs from the file
  tunegate apply -f tunegate.yaml --prune""",
    "config": """\
examples:
  tunegate config check config/tunegate.yaml   # exit 0, or 2 with the message serve would print""",
    "usage": """\
examples:
  tunegate usage --by team,alias --since 2026-11-01
  tunegate usage --by day --team airport-cs --csv > usage.csv
  tunegate usage savings --alias pudong-support""",
    "budget": """\
examples:
  tunegate budget set airport-cs --monthly-usd 500 --soft-pct 80
  tunegate budget list""",
    "finetune": """\
examples:
  tunegate finetune validate train.jsonl --model gpt-4o-mini-2024-07-18
  tunegate finetune list --status running
  tunegate finetune status ftjob-abc123
  tunegate finetune promote ftjob-abc123 --canary 10""",
}
