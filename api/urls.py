"""The REST API's URLs, mounted at /api/."""
from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from api import views

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("topics/", views.TopicList.as_view(), name="api-topics"),
    path("topics/<str:name>/", views.TopicDetail.as_view(), name="api-topic"),
    path("topics/<str:name>/records/", views.Records.as_view(), name="api-records"),
    path("topics/<str:name>/redrive/", views.Redrive.as_view(), name="api-redrive"),
    path("half-messages/", views.HalfMessages.as_view(), name="api-half-messages"),
    path("half-messages/<str:message_id>/", views.HalfMessageDetail.as_view(), name="api-half-message"),
    path("half-messages/<str:message_id>/commit/", views.HalfMessageCommit.as_view(), name="api-half-commit"),
    path("half-messages/<str:message_id>/rollback/", views.HalfMessageRollback.as_view(), name="api-half-rollback"),
]
