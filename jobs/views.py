from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The start page; the dashboard's job pages replace it."""
    return render(request, "jobs/home.html")
