"""How the operator logs in to the API server: in-cluster ServiceAccount, else kubeconfig
($KUBECONFIG as it is at call time), through the `kubernetes` package's loaders, the way Kopf
logs in. A token file (projected ServiceAccount token, kubeconfig `tokenFile`) rotates, so it
is read again when it changes, at least every minute and after a 401."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from conveyor.errors import UserError

TOKEN_REREAD_SECONDS = 60.0  # client-go re-reads a token file about this often


class NoCredentials(UserError):
    """Neither a pod's ServiceAccount nor a kubeconfig to connect with."""


@dataclass
class Connection:
    """Where the API server is and how to log in: `headers` holds a static Authorization,
    which the token in `token_file` replaces once read."""

    server: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | bool = True
    token_file: str | None = None

    @classmethod
    def from_environment(cls) -> Connection:
        """In-cluster service account, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
        import kubernetes
        from kubernetes.config.incluster_config import SERVICE_TOKEN_FILENAME

        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
            token_file: str | None = SERVICE_TOKEN_FILENAME
        except kubernetes.config.ConfigException:
            # $KUBECONFIG as it is now (the package reads it once, at import)
            path = os.environ.get("KUBECONFIG")
            try:
                kubernetes.config.load_kube_config(config_file=path)  # type: ignore[no-untyped-call]
            except (kubernetes.config.ConfigException, OSError) as err:
                raise NoCredentials(
                    f"no Kubernetes credentials: not in a pod (KUBERNETES_SERVICE_HOST is not set) and "
                    f"no usable kubeconfig at {path or '~/.kube/config'} ({err}); set KUBECONFIG, "
                    "or run the operator in the cluster with its ServiceAccount"
                ) from None
            token_file = kubeconfig_token_file(path or "~/.kube/config")
        config = kubernetes.client.Configuration.get_default_copy()
        key = config.get_api_key_with_prefix
        token = key("BearerToken") or key("authorization")
        headers = {"Authorization": token} if token else {}
        context: ssl.SSLContext | bool = True
        if config.host.startswith("https"):
            context = ssl.create_default_context(cafile=config.ssl_ca_cert)
            if config.cert_file:
                context.load_cert_chain(config.cert_file, config.key_file)
            if not config.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(config.host.rstrip("/"), headers, context, token_file)


def kubeconfig_token_file(paths: str) -> str | None:
    """The current user's `tokenFile` where the `kubernetes` loader logs in with it (no
    auth-provider, no inline `token`), as an absolute path; None otherwise."""
    from kubernetes.config.kube_config import KubeConfigMerger

    try:
        merged = KubeConfigMerger(paths).config  # type: ignore[no-untyped-call]
        context = merged["contexts"].get_with_name(merged["current-context"])["context"]
        user = merged["users"].get_with_name(context["user"])["user"]
    except Exception:  # the loader has already said what is wrong with the file
        return None
    if "auth-provider" in user or user.safe_get("token") or not user.safe_get("tokenFile"):
        return None
    base = os.path.dirname(os.path.abspath(user.path)) if user.path else ""
    return os.path.normpath(os.path.join(base, str(user["tokenFile"])))


class TokenFile:
    """A bearer token in a file that is replaced in place (a projected volume rotates it
    about hourly): read again when its mtime changes, at least every minute, or when forced."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.value: str | None = None
        self._mtime: int | None = None
        self._read_at = 0.0

    def header(self, force: bool = False) -> str | None:
        """The Authorization value; the last one read if the file can't be read now."""
        try:
            mtime, now = os.stat(self.path).st_mtime_ns, self.clock()
            stale = self.value is None or now - self._read_at >= TOKEN_REREAD_SECONDS
            if force or stale or mtime != self._mtime:
                with open(self.path) as f:
                    token = f.read().strip()
                if token:
                    self.value = f"Bearer {token}"
                self._mtime, self._read_at = mtime, now
        except OSError:
            pass
        return self.value
