"""Root URLs: the admin, the platform's landing page, the example shop and the REST API (/api/v1/)."""
from django.contrib import admin
from django.urls import include, path

from queueing import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("shop/", include("shop.urls")),
    path("api/", include("api.urls")),
]
