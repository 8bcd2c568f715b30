"""What deploy/check asks of the deployment files beyond their schemas: the
promises the manifests make to each other and to the binaries.

    python3 deploy/checks.py k8s RENDERED.yaml [--base]
    python3 deploy/checks.py compose RENDERED.yaml
    python3 deploy/checks.py same FILE FILE

Each check prints what it found wrong; the exit code is the number of problems
(0: all good). Needs PyYAML only.
"""

from __future__ import annotations

import pathlib
import re
import sys
from urllib.parse import urlsplit

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The services, their gRPC ports and health names (grpc.health.v1).
SERVICES = {
    "user": (50051, "agora.user.v1.UserService"),
    "order": (50052, "agora.order.v1.OrderService"),
    "payment": (50053, "agora.payment.v1.PaymentService"),
    "inventory": (50054, "agora.inventory.v1.InventoryService"),
    "notification": (50055, "agora.notification.v1.NotificationService"),
}
# Who calls whom inside the system: order's saga, notification reading
# order's and payment's event feeds, and every service reading the user
# service's revocation list.
CALLS = {
    "user": {"order", "payment", "inventory", "notification"},
    "inventory": {"order"},
    "payment": {"order", "notification"},
    "order": {"notification"},
    "notification": set(),
}
# Each caller's settings naming its downstreams.
DOWNSTREAM_URLS = {
    "order": {"AGORA_USER_URL": "user", "AGORA_INVENTORY_URL": "inventory", "AGORA_PAYMENT_URL": "payment", "AGORA_REVOCATION_URL": "user"},
    "notification": {"AGORA_ORDER_URL": "order", "AGORA_PAYMENT_URL": "payment", "AGORA_REVOCATION_URL": "user"},
    "payment": {"AGORA_REVOCATION_URL": "user"},
    "inventory": {"AGORA_REVOCATION_URL": "user"},
}
# What the gateway fronts (notification is called directly).
GATEWAY_UPSTREAMS = ("user", "order", "payment", "inventory")
# Services whose signing key's kid must be in the JWKS, and the setting naming it.
SIGNERS = {
    "user": "AGORA_JWT_SIGNING_KEY_ID",
    "order": "AGORA_SERVICE_SIGNING_KEY_ID",
    "notification": "AGORA_SERVICE_SIGNING_KEY_ID",
    "payment": "AGORA_SERVICE_SIGNING_KEY_ID",
    "inventory": "AGORA_SERVICE_SIGNING_KEY_ID",
}
# NATS JetStream's client port (AGORA_NATS_URL, read by every service).
NATS_PORT = 4222
# Seconds a service needs after its drain to close connections, the pool and
# the span exporter.
CLOSE_MARGIN = 5
# Variables read by libraries rather than declared by our clap configs.
LIBRARY_ENV = re.compile(r"^(OTEL_[A-Z_]+|RUST_LOG)$")

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)
    print(f"  problem: {message}")


def note(message: str) -> None:
    print(f"  note: {message}")


def seconds(value: str) -> float:
    """A humantime duration as the binaries read it ("10s", "1m", "500ms")."""
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*(ms|s|m|h)", value)
    if not parts:
        raise ValueError(f"not a duration: {value!r}")
    for number, unit in parts:
        total += int(number) * units[unit]
    return total


def declared_env(service: str) -> set[str] | None:
    """Environment variables a service binary reads: every `env = "..."` in its
    crate and in the shared interceptors crate. None if the crate does not
    exist yet."""
    crate = ROOT / "crates" / service
    if not crate.is_dir():
        return None
    names: set[str] = set()
    for folder in (crate / "src", ROOT / "crates" / "interceptors" / "src"):
        for path in folder.rglob("*.rs"):
            names.update(re.findall(r'env\s*=\s*"([A-Z][A-Z0-9_]*)"', path.read_text()))
    return names


def check_env(where: str, service: str, names: set[str]) -> None:
    declared = declared_env(service)
    if declared is None:
        note(f"{where}: crates/{service} does not exist yet; its settings are not cross-checked")
        return
    for name in sorted(names):
        if name not in declared and not LIBRARY_ENV.match(name):
            problem(f"{where} sets {name}, which agora-{service} does not read (typo, or a renamed flag?)")


# === Kubernetes ===


def selects(selector: dict | None, labels: dict) -> bool:
    """matchLabels/matchExpressions semantics (In, NotIn, Exists, DoesNotExist)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def env_of(container: dict, config_maps: dict[str, dict]) -> dict[str, str]:
    """A container's environment: envFrom ConfigMaps, then env entries."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            env.update(config_maps.get(ref["name"], {}))
    for entry in container.get("env") or []:
        env[entry["name"]] = entry.get("value", "<from " + ",".join(entry.get("valueFrom", {})) + ">")
    return env


def check_restricted(kind_name: str, pod: dict) -> None:
    """The "restricted" Pod Security Standard, which the namespace enforces."""
    pod_security = pod.get("securityContext") or {}
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problem(f"{kind_name}: shares a host namespace")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            problem(f"{kind_name}: hostPath volume {volume['name']}")
    for container in (pod.get("initContainers") or []) + pod["containers"]:
        security = container.get("securityContext") or {}
        label = f"{kind_name} container {container['name']}"
        if not (security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))):
            problem(f"{label}: runAsNonRoot is not true")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problem(f"{label}: runs as uid 0")
        if security.get("allowPrivilegeEscalation") is not False:
            problem(f"{label}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            problem(f"{label}: does not drop ALL capabilities")
        if set((security.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problem(f"{label}: adds capabilities")
        seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(f"{label}: no RuntimeDefault seccomp profile")
        resources = container.get("resources") or {}
        if not (resources.get("requests") or {}).get("memory") or not (resources.get("limits") or {}).get("memory"):
            problem(f"{label}: no memory request and limit")
        if not (resources.get("requests") or {}).get("cpu"):
            problem(f"{label}: no cpu request")


def check_k8s(path: str, base: bool) -> None:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    config_maps = {cm["metadata"]["name"]: cm.get("data") or {} for cm in by_kind.get("ConfigMap", [])}
    secrets = {s["metadata"]["name"]: set((s.get("data") or {}) | (s.get("stringData") or {})) for s in by_kind.get("Secret", [])}
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    services = by_kind.get("Service", [])
    policies = by_kind.get("NetworkPolicy", [])
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    if len(namespaces) != 1 or None in namespaces:
        problem(f"objects are spread over namespaces {namespaces}; expected exactly one")

    for workload in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []):
        check_restricted(f"{workload['kind']} {workload['metadata']['name']}", workload["spec"]["template"]["spec"])

    pod_labels: dict[str, dict] = {}
    nats_urls: dict[str, str | None] = {}
    for svc, (port, health_name) in SERVICES.items():
        name = f"agora-{svc}"
        deployment = deployments.get(name)
        if deployment is None:
            problem(f"no Deployment {name}")
            continue
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        pod_labels[svc] = labels
        if not selects(spec["selector"], labels):
            problem(f"{name}: its selector does not select its own pods")
        if "replicas" in spec:
            problem(f"{name}: sets replicas, which the HorizontalPodAutoscaler owns")
        main = next((c for c in pod["containers"] if c["name"] == svc), None)
        if main is None:
            problem(f"{name}: no container named {svc}")
            continue
        if (main.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
            problem(f"{name}: the root filesystem is writable")
        if main.get("command", [None])[0] != name:
            problem(f"{name}: container runs {main.get('command')}, expected {name}")
        ports = {p.get("name"): p["containerPort"] for p in main.get("ports") or []}
        if ports.get("grpc") != port:
            problem(f"{name}: gRPC port is {ports.get('grpc')}, expected {port}")
        env = env_of(main, config_maps)

        # The binary must listen where the probes and the Service look.
        listen = env.get(f"AGORA_{svc.upper()}_LISTEN", "")
        if listen != f"0.0.0.0:{port}":
            problem(f"{name}: AGORA_{svc.upper()}_LISTEN is {listen!r}, expected 0.0.0.0:{port}")
        metrics = env.get("AGORA_METRICS_LISTEN", "")
        if not metrics.endswith(f":{ports.get('metrics')}"):
            problem(f"{name}: AGORA_METRICS_LISTEN {metrics!r} is not the metrics port {ports.get('metrics')}")
        annotations = spec["template"]["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/port") != str(ports.get("metrics")):
            problem(f"{name}: prometheus.io/port annotation is not the metrics port")

        # Probes: native gRPC, on the gRPC port, asking for this service.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = (main.get(probe) or {}).get("grpc")
            if not grpc:
                problem(f"{name}: {probe} is not a native grpc probe")
            elif grpc.get("port") != port or grpc.get("service") != health_name:
                problem(f"{name}: {probe} asks {grpc} instead of port {port}, service {health_name}")

        # Shutdown arithmetic: preStop, then SIGTERM and the drain, then closing.
        sleep = (((main.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
        grace = seconds(env.get("AGORA_SHUTDOWN_GRACE", "10s"))
        period = pod.get("terminationGracePeriodSeconds", 30)
        if sleep is None:
            problem(f"{name}: no preStop sleep")
        elif period < sleep + grace + CLOSE_MARGIN:
            problem(f"{name}: terminationGracePeriodSeconds {period} < preStop {sleep} + drain {grace:g} + {CLOSE_MARGIN}")

        # Migrations run before the server, from the same image and settings.
        migrate = [c for c in pod.get("initContainers") or [] if c.get("command") == [name, "--migrate-only"]]
        if not migrate:
            problem(f"{name}: no init container running `{name} --migrate-only`")
        elif migrate[0]["image"] != main["image"] or env_of(migrate[0], config_maps).get("DATABASE_URL") != env.get("DATABASE_URL"):
            problem(f"{name}: the migration container's image or DATABASE_URL differs from the server's")

        # Every file setting points into a mounted volume, in the server and
        # in the migration container alike.
        for container in [main] + migrate[:1]:
            mounts = [m["mountPath"] for m in container.get("volumeMounts") or []]
            for key, value in env_of(container, config_maps).items():
                if key.endswith("_FILE") and not any(value.startswith(m.rstrip("/") + "/") for m in mounts):
                    problem(f"{name} container {container['name']}: {key}={value} is not under a mounted volume")

        # Referenced ConfigMaps and Secrets exist (Secrets only when rendered
        # with an overlay; the base leaves them to the cluster).
        for container in pod["containers"] + (pod.get("initContainers") or []):
            for source in container.get("envFrom") or []:
                ref = source.get("configMapRef") or source.get("secretRef")
                if source.get("configMapRef") and ref["name"] not in config_maps:
                    problem(f"{name}: ConfigMap {ref['name']} does not exist")
            for entry in container.get("env") or []:
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not base and ref["key"] not in secrets.get(ref["name"], set()):
                    problem(f"{name}: Secret {ref['name']} has no key {ref['key']}")
        for volume in pod.get("volumes") or []:
            if "secret" in volume and not base:
                have = secrets.get(volume["secret"]["secretName"])
                if have is None:
                    problem(f"{name}: Secret {volume['secret']['secretName']} does not exist")
                else:
                    for item in volume["secret"].get("items") or []:
                        if item["key"] not in have:
                            problem(f"{name}: Secret {volume['secret']['secretName']} has no key {item['key']}")

        check_env(f"Deployment {name}", svc, set(env))

        # Companions: a Service, a PodDisruptionBudget, an autoscaler.
        service = next((s for s in services if s["metadata"]["name"] == name), None)
        if service is None or service["spec"].get("selector") is None or not selects({"matchLabels": service["spec"]["selector"]}, labels):
            problem(f"{name}: no Service selecting its pods")
        else:
            if service["spec"].get("clusterIP") != "None":
                problem(f"Service {name}: not headless; clients balance per pod")
            grpc_port = next((p for p in service["spec"]["ports"] if p["name"] == "grpc"), None)
            if grpc_port is None or grpc_port["port"] != port:
                problem(f"Service {name}: no grpc port {port}")
        if not any(selects(p["spec"]["selector"], labels) for p in by_kind.get("PodDisruptionBudget", [])):
            problem(f"{name}: no PodDisruptionBudget")
        hpa = [h for h in by_kind.get("HorizontalPodAutoscaler", []) if h["spec"]["scaleTargetRef"]["name"] == name]
        if not hpa:
            problem(f"{name}: no HorizontalPodAutoscaler")
        elif base and hpa[0]["spec"].get("minReplicas", 1) < 2:
            problem(f"{name}: fewer than two replicas in the base; one pod is no availability")

        for key, target in DOWNSTREAM_URLS.get(svc, {}).items():
            url = urlsplit(env.get(key, ""))
            if url.hostname != f"agora-{target}" or url.port != SERVICES[target][0]:
                problem(f"{name}: {key}={env.get(key)!r} is not the agora-{target} Service's gRPC port")
        nats_urls[svc] = env.get("AGORA_NATS_URL")

    # The gateway: HTTP probes on its one port, listening where they look,
    # settings it really reads, and the four services as its upstreams.
    gateway = deployments.get("agora-gateway")
    if gateway is None:
        problem("no Deployment agora-gateway")
    else:
        main = gateway["spec"]["template"]["spec"]["containers"][0]
        env = env_of(main, config_maps)
        port = next((p["containerPort"] for p in main.get("ports") or [] if p.get("name") == "http"), None)
        if env.get("AGORA_GATEWAY_LISTEN") != f"0.0.0.0:{port}":
            problem(f"agora-gateway: AGORA_GATEWAY_LISTEN {env.get('AGORA_GATEWAY_LISTEN')!r} is not 0.0.0.0:{port}")
        for probe, path in (("startupProbe", "/healthz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = (main.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path or get.get("port") != "http":
                problem(f"agora-gateway: {probe} is not GET {path} on the http port")
        for svc in GATEWAY_UPSTREAMS:
            svc_port = SERVICES[svc][0]
            url = urlsplit(env.get(f"AGORA_{svc.upper()}_URL", ""))
            if url.hostname != f"agora-{svc}" or url.port != svc_port:
                problem(f"agora-gateway: AGORA_{svc.upper()}_URL is not the agora-{svc} Service's gRPC port")
        check_env("Deployment agora-gateway", "gateway", set(env))
        if not any(s["metadata"]["name"] == "agora-gateway" for s in services):
            problem("agora-gateway: no Service")

    # NATS: every service relays to (or, notification, reads from) one server.
    check_nats_urls("Deployment agora-", nats_urls)
    if not base:
        # The overlay that runs NATS serves it where the services look.
        url = urlsplit(next(iter(nats_urls.values())) or "")
        nats = next((s for s in services if s["metadata"]["name"] == url.hostname), None)
        if nats is None:
            problem(f"AGORA_NATS_URL names host {url.hostname!r}, which no Service of the overlay is")
        elif not any(p["port"] == url.port for p in nats["spec"]["ports"]):
            problem(f"Service {url.hostname}: no port {url.port} (AGORA_NATS_URL)")

    # Network policy: the calls allowed between our pods are exactly the
    # system's (the saga's and notification's feeds).
    if not any(p["spec"].get("podSelector") == {} and "Ingress" in p["spec"].get("policyTypes", []) and not p["spec"].get("ingress") for p in policies):
        problem("no default-deny ingress NetworkPolicy")
    for target, target_labels in pod_labels.items():
        allowed = set()
        for caller, caller_labels in pod_labels.items():
            for policy in policies:
                if not selects(policy["spec"]["podSelector"], target_labels) and policy["spec"]["podSelector"] != {}:
                    continue
                for rule in policy["spec"].get("ingress") or []:
                    for peer in rule.get("from") or [{}]:
                        same_namespace_pod = "namespaceSelector" not in peer and selects(peer.get("podSelector"), caller_labels)
                        any_namespace_pod = peer.get("namespaceSelector") == {} and selects(peer.get("podSelector"), caller_labels)
                        if peer == {} or same_namespace_pod or any_namespace_pod:
                            allowed.add(caller)
        if allowed != CALLS[target]:
            problem(f"NetworkPolicy lets {sorted(allowed) or 'nobody'} call {target}; the system's calls need {sorted(CALLS[target]) or 'nobody'}")
        ports_open = set()
        for policy in policies:
            if selects(policy["spec"]["podSelector"], target_labels):
                for rule in policy["spec"].get("ingress") or []:
                    ports_open.update(str(p.get("port")) for p in rule.get("ports") or [])
        if not {"grpc", "metrics"} <= ports_open:
            problem(f"NetworkPolicy for {target} does not open both the grpc and metrics ports (opens {sorted(ports_open)})")

    # The kids the signers use are in the JWKS everyone verifies with.
    if not base:
        jwks_secrets = [s for s in by_kind.get("Secret", []) if "jwks.json" in (s.get("data") or {})]
        import base64
        import json

        for secret in jwks_secrets:
            kids = {k["kid"] for k in json.loads(base64.b64decode(secret["data"]["jwks.json"]))["keys"]}
            for svc, key in SIGNERS.items():
                deployment = deployments.get(f"agora-{svc}")
                if deployment:
                    kid = env_of(deployment["spec"]["template"]["spec"]["containers"][0], config_maps).get(key)
                    if kid not in kids:
                        problem(f"agora-{svc} signs with kid {kid!r}, which the JWKS ({sorted(kids)}) does not list")


# === compose ===


def check_compose(path: str) -> None:
    project = yaml.safe_load(open(path))
    services = project["services"]
    for required in ("postgres", "nats", "otel-collector", "jaeger", "prometheus"):
        if required not in services:
            problem(f"compose: no {required} service")
    databases = set()
    nats_urls: dict[str, str | None] = {}
    scrape = open(ROOT / "deploy/compose/prometheus.yml").read()
    init_sql = open(ROOT / "deploy/compose/postgres-init.sql").read()
    for svc, (port, health_name) in SERVICES.items():
        service = services.get(svc)
        if service is None:
            problem(f"compose: no {svc} service")
            continue
        env = service.get("environment") or {}
        if service.get("command", [None])[0] != f"agora-{svc}":
            problem(f"compose {svc}: runs {service.get('command')}")
        test = (service.get("healthcheck") or {}).get("test") or []
        if test != ["CMD", "agora", "health", "--addr", f"127.0.0.1:{port}", "--service", health_name]:
            problem(f"compose {svc}: healthcheck {test} is not `agora health` on {port} for {health_name}")
        if env.get(f"AGORA_{svc.upper()}_LISTEN") != f"0.0.0.0:{port}":
            problem(f"compose {svc}: does not listen on 0.0.0.0:{port}")
        depends = service.get("depends_on") or {}
        if (depends.get("postgres") or {}).get("condition") != "service_healthy":
            problem(f"compose {svc}: does not wait for a healthy postgres")
        for downstream in CALLS:
            if svc in CALLS[downstream] and (depends.get(downstream) or {}).get("condition") != "service_healthy":
                problem(f"compose {svc}: starts before {downstream} is healthy")
        for key, target in DOWNSTREAM_URLS.get(svc, {}).items():
            url = urlsplit(env.get(key, ""))
            if url.hostname != target or url.port != SERVICES[target][0]:
                problem(f"compose {svc}: {key}={env.get(key)!r} is not {target}:{SERVICES[target][0]}")
        nats_urls[svc] = env.get("AGORA_NATS_URL")
        if nats_urls[svc] and (depends.get(urlsplit(nats_urls[svc]).hostname) or {}).get("condition") != "service_healthy":
            problem(f"compose {svc}: does not wait for a healthy NATS")
        grace = seconds(env.get("AGORA_SHUTDOWN_GRACE", "10s"))
        stop = seconds(service.get("stop_grace_period", "10s"))
        if stop < grace + CLOSE_MARGIN:
            problem(f"compose {svc}: stop_grace_period {stop:g}s < drain {grace:g}s + {CLOSE_MARGIN}s")
        database = urlsplit(env.get("DATABASE_URL", ""))
        name = database.path.lstrip("/")
        databases.add(name)
        if f"CREATE DATABASE {name} " not in init_sql:
            problem(f"compose {svc}: database {name!r} is not created by postgres-init.sql")
        metrics_port = env.get("AGORA_METRICS_LISTEN", "").rpartition(":")[2]
        if f'"{svc}:{metrics_port}"' not in scrape:
            problem(f"compose {svc}: Prometheus does not scrape {svc}:{metrics_port}")
        mounts = [v.split(":")[1] if isinstance(v, str) else v["target"] for v in service.get("volumes") or []]
        for key, value in env.items():
            if key.endswith("_FILE") and not any(value.startswith(m.rstrip("/") + "/") for m in mounts):
                problem(f"compose {svc}: {key}={value} is not under a mounted volume")
        check_env(f"compose service {svc}", svc, set(env))
    gateway = services.get("gateway")
    if gateway is None:
        problem("compose: no gateway service")
    else:
        env = gateway.get("environment") or {}
        test = (gateway.get("healthcheck") or {}).get("test") or []
        if test[:2] != ["CMD", "agora-gateway"] or "/readyz" not in " ".join(test):
            problem(f"compose gateway: healthcheck {test} does not ask /readyz")
        for svc in GATEWAY_UPSTREAMS:
            svc_port = SERVICES[svc][0]
            url = urlsplit(env.get(f"AGORA_{svc.upper()}_URL", ""))
            if url.hostname != svc or url.port != svc_port:
                problem(f"compose gateway: AGORA_{svc.upper()}_URL is not {svc}:{svc_port}")
            if ((gateway.get("depends_on") or {}).get(svc) or {}).get("condition") != "service_healthy":
                problem(f"compose gateway: starts before {svc} is healthy")
        check_env("compose service gateway", "gateway", set(env))
    check_nats_urls("compose service ", nats_urls)
    nats = services.get(urlsplit(next(iter(nats_urls.values())) or "").hostname or "nats")
    if nats is not None:
        if "-js" not in (nats.get("command") or []) and "--jetstream" not in (nats.get("command") or []):
            problem("compose nats: JetStream is not enabled (-js)")
        if not (nats.get("healthcheck") or {}).get("test"):
            problem("compose nats: no healthcheck, so services cannot wait for it")
    if len(databases) != len(SERVICES):
        problem(f"compose: services share databases ({sorted(databases)}); one each")


def check_nats_urls(where: str, urls: dict[str, str | None]) -> None:
    """Every service has AGORA_NATS_URL, and all name the same server."""
    for svc, url in urls.items():
        if not url:
            problem(f"{where}{svc}: no AGORA_NATS_URL; its events would not reach NATS")
        elif urlsplit(url).scheme != "nats" or urlsplit(url).port != NATS_PORT:
            problem(f"{where}{svc}: AGORA_NATS_URL={url!r} is not nats://host:{NATS_PORT}")
    if len({u for u in urls.values() if u}) > 1:
        problem(f"services name different NATS servers: {urls}")


def check_same(first: str, second: str) -> None:
    if pathlib.Path(first).read_bytes() != pathlib.Path(second).read_bytes():
        problem(f"{first} and {second} differ; keep them identical")


def main() -> int:
    command, *args = sys.argv[1:]
    if command == "k8s":
        check_k8s(args[0], base="--base" in args)
    elif command == "compose":
        check_compose(args[0])
    elif command == "same":
        check_same(*args)
    else:
        raise SystemExit(__doc__)
    if not problems:
        print(f"  ok: {command} {' '.join(pathlib.Path(a).name for a in args)}")
    return min(len(problems), 100)


if __name__ == "__main__":
    sys.exit(main())
