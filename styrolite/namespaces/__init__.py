"""Linux namespaces for a container: which to create, which to join, and the user-namespace id maps.

A container's namespaces come from ``linux.namespaces``: an entry without a path asks for a new
namespace, one with a path joins an existing one (``/proc/<pid>/ns/<type>`` or a bind mount of it).
"""

from styrolite.namespaces.idmap import write_id_mappings
from styrolite.namespaces.plan import (
    NamespacePlan,
    join_before_user,
    join_namespaces,
    open_namespace_files,
    plan_namespaces,
)

__all__ = ["NamespacePlan", "join_before_user", "join_namespaces", "open_namespace_files", "plan_namespaces",
           "write_id_mappings"]
