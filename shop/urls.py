"""The shop's URLs, mounted at /shop/."""
from django.urls import path

from shop import views

app_name = "shop"
urlpatterns = [
    path("", views.order_list, name="orders"),
    path("orders/<int:order_id>/", views.order_detail, name="order"),
    path("orders/<int:order_id>/pay/", views.pay, name="pay"),
]
