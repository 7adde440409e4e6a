#!/usr/bin/env bash
# The chart's checks (make lint-chart): helm lint --strict and helm template of both value files, the manifests
# validated offline against Kubernetes' schemas (the oldest version Chart.yaml allows and kubernetes-validate's
# newest), and the settings the chart must refuse, each with the reason it gives. helm and kubernetes-validate are
# the project's dev dependencies (PATH: the venv's bin).
set -euo pipefail
chart="$(cd "$(dirname "$0")" && pwd)/tunegate"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
failed=0

for values in values.yaml values-production.yaml; do
  helm lint --strict --quiet "$chart" -f "$chart/$values"
  helm template check "$chart" -f "$chart/$values" >"$out/manifests.yaml"
  for version in 1.30.0 1.37.0; do
    if ! kubernetes-validate --strict --quiet --kubernetes-version "$version" - <"$out/manifests.yaml" \
      >"$out/validation.txt" 2>&1; then
      echo "chart: FAILED: $values does not validate against Kubernetes $version:"
      cat "$out/validation.txt"
      exit 1
    fi
    # The ServiceMonitor is a CRD (the Prometheus Operator's): Kubernetes' schemas do not have it.
    grep -v "Couldn't find schema for kind ServiceMonitor" "$out/validation.txt" || true
  done
  echo "chart: $values lints, renders $(grep -c '^kind:' "$out/manifests.yaml") manifests, validates (1.30, 1.37)"
done

# refuses SETTINGS... EXPECTED: rendering must fail, and say EXPECTED.
refuses() {
  local expected="${*: -1}" settings=("${@:1:$#-1}")
  if helm template check "$chart" "${settings[@]}" >"$out/refusal.txt" 2>&1; then
    echo "chart: FAILED: ${settings[*]} rendered; it should be refused ($expected)"
    failed=1
  elif ! grep -qF -- "$expected" "$out/refusal.txt"; then
    echo "chart: FAILED: ${settings[*]} was refused without saying \"$expected\":"
    cat "$out/refusal.txt"
    failed=1
  else
    echo "chart: refuses ${settings[*]}"
  fi
}
refuses --set replicaCount=3 "each replica would keep its own SQLite registry"
refuses --set serviceMonitor.enabled=true "Prometheus would be refused"
refuses --set autoscaling.enabled=true "the autoscaler would start replicas that each keep their own SQLite registry"
refuses --set replicaCount=three "replicaCount: Invalid type. Expected: integer"
refuses --set replicaCuont=3 "Additional property replicaCuont is not allowed"
refuses --set config.database.url=postgresql://u:p@db/tunegate "config: Additional property database is not allowed"
refuses --set config.upstreams.openai.api_key=sk-plain "api_key"
refuses --set log.format=xml "log.format must be one of the following"
refuses --set terminationGracePeriodSeconds=5 "must be longer than shutdown.drainSeconds"

# And what it must render: one replica on SQLite has a PersistentVolumeClaim and no migration Job (it migrates as
# it starts); PostgreSQL has the Job as a pre-install,pre-upgrade hook and no claim.
helm template check "$chart" >"$out/sqlite.yaml"
helm template check "$chart" -f "$chart/values-production.yaml" >"$out/postgres.yaml"
expect() {
  if ! grep -qF -- "$2" "$out/$1"; then echo "chart: FAILED: $1 lacks: $2"; failed=1; fi
}
expect_not() {
  if grep -qF -- "$2" "$out/$1"; then echo "chart: FAILED: $1 has: $2"; failed=1; fi
}
expect sqlite.yaml "kind: PersistentVolumeClaim"
expect_not sqlite.yaml "kind: Job"
expect postgres.yaml "helm.sh/hook: pre-install,pre-upgrade"
expect postgres.yaml 'command: ["tunegate", "db", "upgrade", "--config", "/etc/tunegate/tunegate.yaml"]'
expect_not postgres.yaml "kind: PersistentVolumeClaim"
expect postgres.yaml 'image: "ghcr.io/your-org/tunegate:0.1.0"'   # the tag defaults to appVersion
# The migration pod serves nothing: the Deployment's selector (the Service's, the PDB's) must not match it.
if ! python -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
selector = next(d for d in docs if d["kind"] == "Deployment")["spec"]["selector"]["matchLabels"]
pod = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["metadata"]["labels"]
sys.exit(all(pod.get(k) == v for k, v in selector.items()))
' "$out/postgres.yaml"; then
  echo "chart: FAILED: the migration Job's pod matches the Deployment's selector"
  failed=1
fi
[ "$failed" = 0 ] && echo "chart: all checks passed"
exit "$failed"
