"""Root URLs: the admin, the landing page, the monitoring endpoints, the example shop and the REST API
(/api/v1/)."""
from django.contrib import admin
from django.urls import include, path

from ops import views as ops_views
from queueing import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("console/", include("console.urls")),
    path("shop/", include("shop.urls")),
    path("api/", include("api.urls")),
    path("healthz", ops_views.healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
    path("metrics", ops_views.metrics_view, name="metrics"),
]
