from django.urls import path

from jobs.endpoints import views

urlpatterns = [
    path("jobs/<str:name>/deploy/", views.deploy_job, name="deploy_job"),
    path("endpoints/", views.endpoint_list, name="endpoints"),
    path("endpoints/<str:name>/", views.endpoint_detail, name="endpoint_detail"),
    path("endpoints/<str:name>/status/", views.endpoint_status, name="endpoint_status"),
    path("endpoints/<str:name>/log/", views.endpoint_log, name="endpoint_log"),
    path("endpoints/<str:name>/invoke/", views.invoke, name="invoke"),
    path("endpoints/<str:name>/invocations/<int:pk>/", views.invocation_fragment, name="invocation"),
    path("endpoints/<str:name>/tests/run/", views.run_tests, name="run_suite"),
    path("endpoints/<str:name>/suites/<int:pk>/", views.suite_fragment, name="suite_run"),
    path("endpoints/<str:name>/tests/<int:pk>/run/", views.run_tests, name="run_test"),
    path("endpoints/<str:name>/tests/<int:pk>/delete/", views.delete_test, name="delete_test"),
    path("endpoints/<str:name>/delete/", views.delete_endpoint, name="delete_endpoint"),
]
