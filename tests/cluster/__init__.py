"""A real Kubernetes control plane for the tests and for `make dev-cluster`.

- `controlplane.py`: etcd, kube-apiserver (RBAC; admission with NamespaceLifecycle,
  ServiceAccount, OwnerReferencesPermissionEnforcement, PodSecurity; an audit log of writes)
  and kube-controller-manager (job, ttl-after-finished, deployment, replicaset,
  garbage-collector, namespace, serviceaccount and token controllers, among others), built from
  the Go module proxy by `tools/build.sh`.
- `pki.py`: fresh certificates and ServiceAccount signing keys per cluster.
- `kubelet.py`: a process kubelet: a Ready Node whose pods run as local processes.
- `cluster.py`: all of it plus `helm install` of the chart; the operator authenticates as the
  chart's ServiceAccount.
- `api.py`: the harness's own small async client.
- `__main__.py`: `python -m tests.cluster up|down` (what `make dev-cluster` runs).
"""
