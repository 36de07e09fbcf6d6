#!/usr/bin/env bash
# Try Conveyor on kind: cluster, image, chart with MinIO, the breast-cancer example, one prediction.
# Needs docker, kind, kubectl and helm. (CI has no Docker engine, so this runs on your machine.)
set -euo pipefail
cd "$(dirname "$0")/.."
NS=conveyor
IMAGE=conveyor:dev

kind get clusters | grep -qx conveyor || kind create cluster --config kind-config.yaml
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name conveyor

helm upgrade --install conveyor charts/conveyor --namespace "$NS" --create-namespace \
  --set image.repository=conveyor --set image.tag=dev --set image.pullPolicy=Never \
  -f charts/conveyor/ci/kind-values.yaml --wait --timeout 5m

kubectl -n "$NS" apply -f examples/breast-cancer/pipeline.yaml
kubectl -n "$NS" create -f examples/breast-cancer/run.yaml
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded pipelinerun/breast-cancer-1 --timeout=15m
kubectl -n "$NS" get pipelinerun breast-cancer-1

kubectl -n "$NS" apply -f examples/breast-cancer/deployment.yaml
kubectl -n "$NS" wait --for=condition=Ready modeldeployment/breast-cancer --timeout=5m
# the NodePort Service of ci/kind-values.yaml, mapped to localhost:30800 by kind-config.yaml
python3 - <<'PY'
import json, urllib.request
row = dict(zip(
    ["mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness", "mean compactness",
     "mean concavity", "mean concave points", "mean symmetry", "mean fractal dimension", "radius error",
     "texture error", "perimeter error", "area error", "smoothness error", "compactness error",
     "concavity error", "concave points error", "symmetry error", "fractal dimension error",
     "worst radius", "worst texture", "worst perimeter", "worst area", "worst smoothness",
     "worst compactness", "worst concavity", "worst concave points", "worst symmetry",
     "worst fractal dimension"],
    [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053,
     8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6,
     2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189]))
req = urllib.request.Request("http://127.0.0.1:30800/predict", data=json.dumps({"instances": [row]}).encode())
print(urllib.request.urlopen(req).read().decode())
PY
