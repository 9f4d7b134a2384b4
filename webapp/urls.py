from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from jobs import compare, metric_tester, metrics_views, selection, views
from webapp import signin
from webapp.health import healthz

handler400 = "webapp.errors.bad_request"

urlpatterns = [
    # The SageMaker-compatible API (jobs/awsapi): signed requests, no session, no CSRF.
    path("aws", include("jobs.awsapi.urls")),
    path("settings/keys/", include("jobs.awsapi.page_urls")),
    path("", views.home, name="home"),
    path("jobs/", views.history, name="history"),
    path("jobs/import/", views.import_history, name="import_history"),
    path("new/", views.new_job, name="new_job"),
    path("new/code/", views.upload_code, name="upload_code"),
    path("new/preview/", views.preview, name="preview"),
    path("new/metrics/test/", metric_tester.test_metrics, name="metric_test"),
    path("code/<str:sha256>/", views.code_file, name="code"),
    path("code/<str:sha256>/<path:path>", views.code_file, name="code_file"),
    # Not under jobs/: a job may be named "compare".
    path("compare/", compare.compare_jobs, name="compare_jobs"),
    path("compare/selected/", selection.compare_selected, name="compare_selected"),
    path("compare/metrics.json", compare.compare_metrics, name="compare_metrics"),
    path("jobs/<str:name>/", views.job_detail, name="job_detail"),
    path("jobs/<str:name>/status/", views.job_status, name="job_status"),
    path("jobs/<str:name>/metrics.json", metrics_views.metrics_json, name="job_metrics"),
    path("jobs/<str:name>/log/", views.job_log, name="job_log"),
    path("jobs/<str:name>/artifacts/", views.artifacts, name="artifacts"),
    path("jobs/<str:name>/artifacts/<str:which>/", views.artifact_download, name="artifact_download"),
    path("jobs/<str:name>/artifacts/<str:which>/<path:member>", views.artifact_file, name="artifact_file"),
    path("jobs/<str:name>/stop/", views.stop, name="stop_job"),
    path("jobs/<str:name>/clone/", views.clone, name="clone_job"),
    path("jobs/<str:name>/resubmit/", views.resubmit, name="resubmit_job"),
    path("", include("jobs.endpoints.urls")),
    path("accounts/login/", signin.LoginView.as_view(), name="login"),
    path("accounts/invite/", signin.invite, name="invite"),
    path("accounts/welcome/<uidb64>/<token>/", signin.welcome, name="welcome"),
    path("oidc/authenticate/", signin.oidc_start, name="oidc_authentication_init"),
    path("oidc/callback/", signin.oidc_callback, name="oidc_authentication_callback"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
]
