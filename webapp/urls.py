from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from jobs import views

urlpatterns = [
    path("", views.home, name="home"),
    path("jobs/", views.history, name="history"),
    path("jobs/<str:name>/", views.job_detail, name="job_detail"),
    path("jobs/<str:name>/stop/", views.stop, name="stop_job"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
