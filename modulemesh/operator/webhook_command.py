"""``modulemesh webhook-configuration``: print the admission webhook's configuration.

The operator may not create the cluster's ValidatingWebhookConfiguration (only get and patch
its CA bundle), so someone with that right installs it: the chart does in a cluster; for an
operator run elsewhere (``modulemesh operator --webhook-port ...``) this prints the same object
for ``kubectl apply -f -``, from the same settings (flags, else ``MODULEMESH_WEBHOOK_*``). The
running operator then fills in the CA bundle of its certificate.
"""

from __future__ import annotations

import argparse
import os
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """The webhook flags of ``modulemesh operator``, plus where the API server calls it."""
    parser.add_argument(
        "--webhook-port",
        type=int,
        help="the port the operator serves the webhook on (MODULEMESH_WEBHOOK_PORT; required)",
    )
    parser.add_argument(
        "--webhook-host",
        help="host the API server calls, when not through a Service (MODULEMESH_WEBHOOK_HOST; "
        "127.0.0.1 when neither this nor --service is given)",
    )
    parser.add_argument(
        "--service",
        metavar="NS/NAME[:PORT]",
        help="call the webhook through this Service instead of a URL (MODULEMESH_WEBHOOK_SERVICE)",
    )
    parser.add_argument(
        "--failure-policy",
        choices=["Ignore", "Fail"],
        help="what the API server does while the operator is down "
        "(MODULEMESH_WEBHOOK_FAILURE_POLICY; Ignore when unset)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="only objects in this namespace (repeatable), as the operator's --namespace; "
        "every namespace when none is given (MODULEMESH_WATCH_NAMESPACES)",
    )


_ENV = {
    "webhook_port": "MODULEMESH_WEBHOOK_PORT",
    "webhook_host": "MODULEMESH_WEBHOOK_HOST",
    "service": "MODULEMESH_WEBHOOK_SERVICE",
    "failure_policy": "MODULEMESH_WEBHOOK_FAILURE_POLICY",
}


def run(args: argparse.Namespace) -> int:
    """Print the configuration as YAML; exit code 2 with one line for bad or missing settings."""
    import yaml

    from modulemesh.operator.config import OperatorSettings
    from modulemesh.operator.webhook import webhook_configuration

    env = dict(os.environ)
    for attr, key in _ENV.items():
        value = getattr(args, attr)
        if value is not None:
            env[key] = str(value)
    if args.namespaces:
        env["MODULEMESH_WATCH_NAMESPACES"] = ",".join(args.namespaces)
    try:
        settings = OperatorSettings.from_env(env)
    except ValueError as error:
        print(f"modulemesh webhook-configuration: {error}", file=sys.stderr)
        return 2
    if settings.webhook is None:
        print(
            "modulemesh webhook-configuration: no webhook port: give --webhook-port "
            "(the operator's) or set MODULEMESH_WEBHOOK_PORT",
            file=sys.stderr,
        )
        return 2
    config = webhook_configuration(settings.webhook, None, settings.watch_namespaces)
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    return 0
