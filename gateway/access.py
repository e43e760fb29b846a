"""Who may call what on the gateway: one table per listener, applied by meshkit.auth.

The public listener serves BundleService: a method that names a user needs a token listing
that user; a method that names a job needs a token listing the job's owner (checked on the
record the handler reads). WebhookService, on the public listener too, takes no token: GitHub
proves each delivery with a signature that the handler checks (SELF_AUTHENTICATED). The admin
listener serves OpsService, every method of it (present and future) for admin-scoped tokens
only.
"""

from __future__ import annotations

from contextmesh.gateway.v1 import bundle_service_pb2, webhook_service_pb2
from contextmesh.ops.v1 import ops_service_pb2

from meshkit.auth import ADMIN, JOB_OWNER, SELF_AUTHENTICATED, Rule, user_field

__all__ = ["ADMIN_RULES", "BUNDLE_SERVICE", "OPS_SERVICE", "PUBLIC_RULES", "WEBHOOK_SERVICE"]

BUNDLE_SERVICE = bundle_service_pb2.DESCRIPTOR.services_by_name["BundleService"].full_name
WEBHOOK_SERVICE = webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name
OPS_SERVICE = ops_service_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name

_USER = user_field("user")
PUBLIC_RULES: dict[str, Rule] = {
    f"/{BUNDLE_SERVICE}/RefreshBundle": _USER,
    f"/{BUNDLE_SERVICE}/GetBundle": _USER,
    f"/{BUNDLE_SERVICE}/DownloadBundle": _USER,
    f"/{BUNDLE_SERVICE}/SearchBundle": _USER,
    f"/{BUNDLE_SERVICE}/ListJobs": _USER,
    f"/{BUNDLE_SERVICE}/GetRefreshStatus": _USER,
    f"/{BUNDLE_SERVICE}/SetSchedule": _USER,
    f"/{BUNDLE_SERVICE}/GetSchedule": _USER,
    f"/{BUNDLE_SERVICE}/DeleteSchedule": _USER,
    f"/{BUNDLE_SERVICE}/SetCallback": _USER,
    f"/{BUNDLE_SERVICE}/GetCallback": _USER,
    f"/{BUNDLE_SERVICE}/DeleteCallback": _USER,
    f"/{BUNDLE_SERVICE}/GetJob": JOB_OWNER,
    f"/{BUNDLE_SERVICE}/WatchJob": JOB_OWNER,
    f"/{BUNDLE_SERVICE}/CancelJob": JOB_OWNER,
    f"/{WEBHOOK_SERVICE}/ReceiveGithubWebhook": SELF_AUTHENTICATED,
}
ADMIN_RULES: dict[str, Rule] = {
    f"/{OPS_SERVICE}/{method.name}": ADMIN
    for method in ops_service_pb2.DESCRIPTOR.services_by_name["OpsService"].methods
}
