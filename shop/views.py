"""The shop's pages: place an order, pay it, watch the coupon, points and notification arrive (or the
unpaid order cancelled by its countdown task), and see the shop's nightly schedule."""
from django import forms
from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from shop import models, selectors, services


class OrderForm(forms.Form):
    customer_email = forms.EmailField()
    amount = forms.DecimalField(min_value=0.01, max_value=1_000_000, decimal_places=2, help_text="in euros")


def order_list(request):
    form = OrderForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        order = services.place_order(form.cleaned_data["customer_email"], int(form.cleaned_data["amount"] * 100))
        return redirect("shop:order", order_id=order.id)
    orders = list(models.Order.objects.prefetch_related("coupons", "points", "notifications")[:50])
    countdowns = selectors.countdowns(orders)
    for order in orders:
        order.countdown = countdowns.get(order.id)
    return render(request, "shop/orders.html", {
        "form": form, "orders": orders, "schedules": selectors.shop_schedules(),
        "timeout_s": settings.SHOP["UNPAID_ORDER_TIMEOUT_S"], "coupon_days": settings.SHOP["COUPON_VALID_DAYS"],
    })


def order_detail(request, order_id):
    order = get_object_or_404(models.Order, id=order_id)
    return render(request, "shop/order.html", {
        "order": order,
        "countdown": selectors.countdowns([order]).get(order.id),
        "timeout_s": settings.SHOP["UNPAID_ORDER_TIMEOUT_S"],
        # Reload while the order waits for its countdown, so the cancellation shows.
        "refresh": 5 if order.status == models.Order.Status.CREATED else None,
        "coupons": order.coupons.all(),
        "points": order.points.all(),
        "notifications": order.notifications.all(),
    })


@require_POST
def pay(request, order_id):
    try:
        if request.POST.get("via") == "payment-service":
            services.pay_order_remotely(order_id)
        else:
            services.pay_order(order_id)
        messages.success(request, "Paid. The coupon, points and notification follow asynchronously.")
    except models.Order.DoesNotExist:
        messages.error(request, f"There is no order {order_id}.")
    except services.ShopError as error:
        messages.error(request, str(error))
    return redirect("shop:order", order_id=order_id)
