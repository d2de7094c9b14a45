"""A run's Evidently report: ``GET /runs/{run_id}/report`` (viewer), the interactive HTML.

The report is rendered after the run's decision (``driftpilot.runs.reports``): by the run's
executor in the background, or on the first request when it is not there yet (the request
then takes the render's seconds; later ones read the cached file). With run processes
(``api.run_processes``, SQLite) that render happens in one of them: Evidently's Python work
never holds the GIL the API's other requests wait for. A run with no
report (no drift step, no testable column, or what it compared is gone) is a 404 problem
that says why; the run view (``GET /runs/{run_id}``) says ``report_status`` and links
``report_url`` once it is ready.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import Executor, Plane, Viewer
from api.problems import Problem

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get(
    "/{run_id}/report",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {}}, "description": "Evidently's drift report (HTML)."},
        404: {"description": "Unknown run, or a run without a report (the detail says why)."},
        422: {"description": "Evidently could not compare the batch with the reference."},
    },
)
def get_report(run_id: str, cp: Plane, ex: Executor, _: Viewer) -> Response:
    """The run's Evidently data-drift report as HTML, rendered now if it is not yet."""
    ex.render_report(run_id)  # in a run process, when the executor has them
    view, html = cp.run_report_html(run_id)
    if html is None:
        raise Problem(404, f"run {run_id} has no report: {view.reason}", slug="no-report")
    headers = {"X-Report-Sha256": view.sha256} if view.sha256 else None
    return Response(html, media_type="text/html", headers=headers)
