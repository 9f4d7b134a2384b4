"""The history's "Compare selected": the ticked jobs (``?jobs=a&jobs=b``, as a form of checkboxes
sends them) become the compare page's shareable ``?jobs=a,b``; fewer than 2 or more than 20
go back to the same history view with a message saying so."""

from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

#: What the compare page takes (``jobs.compare``).
MIN_JOBS, MAX_JOBS = 2, 20
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
#: A history query string brought back longer than this is dropped (the plain history instead).
MAX_BACK = 4000


@login_required
def compare_selected(request: HttpRequest) -> HttpResponse:
    ticked = request.GET.getlist("jobs")[: MAX_JOBS * 5]
    names = list(dict.fromkeys(n.strip() for n in ticked if n.strip()))
    back = request.GET.get("back", "")
    # Re-encoded from its parsed values: only a query string of the history can come back.
    query = QueryDict(back[1:]).urlencode() if back.startswith("?") and len(back) <= MAX_BACK else ""
    history = reverse("history") + (f"?{query}" if query else "")
    if bad := [n for n in names if not JOB_NAME.fullmatch(n)]:
        messages.error(request, f"{bad[0][:70]!r} is not a job name: select jobs in the list to compare.")
        return redirect(history)
    if not MIN_JOBS <= len(names) <= MAX_JOBS:
        messages.error(
            request,
            f"Select {MIN_JOBS} to {MAX_JOBS} jobs to compare (tick them in the first column); "
            f"{len(names)} {'was' if len(names) == 1 else 'were'} selected.",
        )
        return redirect(history)
    return redirect(reverse("compare_jobs") + "?" + urlencode({"jobs": ",".join(names)}).replace("%2C", ","))
