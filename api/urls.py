"""The REST API's URLs: version 1 at /api/v1/; the unversioned /api/ paths of before, deprecated."""
from django.urls import path, re_path
from django.views.static import serve

from api import consume_views, errors, ops_views, reference, schedule_views, task_views, views

v1 = [
    path("schema/", reference.Schema.as_view(), name="schema"),
    path("reference/", reference.Reference.as_view(url_name="v1:schema"), name="reference"),
    path("reference/redoc/", reference.Redoc.as_view(url_name="v1:schema"), name="redoc"),
    re_path(r"^reference/assets/(?P<path>.+)$", serve, {"document_root": reference.ASSETS}, name="reference-assets"),
    path("topics/", views.TopicList.as_view(), name="topics"),
    path("topics/<str:name>/", views.TopicDetail.as_view(), name="topic"),
    path("topics/<str:name>/records/", views.Records.as_view(), name="records"),
    path("topics/<str:name>/partitions/<int:partition>/records/", consume_views.PartitionRecords.as_view(),
         name="partition-records"),
    path("groups/", ops_views.GroupList.as_view(), name="groups"),
    path("groups/<str:group>/", ops_views.GroupDetail.as_view(), name="group"),
    path("groups/<str:group>/offsets/", consume_views.GroupOffsets.as_view(), name="group-offsets"),
    path("groups/<str:group>/offsets/reset/", ops_views.OffsetReset.as_view(), name="group-offsets-reset"),
    path("share-groups/<str:group>/", ops_views.ShareGroupDetail.as_view(), name="share-group"),
    path("dead-letters/<str:topic>/partitions/<int:partition>/", ops_views.DeadLetters.as_view(), name="dead-letters"),
    path("dead-letters/<str:topic>/redrive/", ops_views.Redrive.as_view(), name="redrive"),
    path("half-messages/", views.HalfMessages.as_view(), name="half-messages"),
    path("half-messages/<str:message_id>/", views.HalfMessageDetail.as_view(), name="half-message"),
    path("half-messages/<str:message_id>/commit/", views.HalfMessageCommit.as_view(), name="half-commit"),
    path("half-messages/<str:message_id>/rollback/", views.HalfMessageRollback.as_view(), name="half-rollback"),
    path("tasks/", task_views.TaskList.as_view(), name="tasks"),
    path("tasks/<str:task_id>/", task_views.TaskDetail.as_view(), name="task"),
    path("tasks/<str:task_id>/cancel/", task_views.TaskCancel.as_view(), name="task-cancel"),
    path("tasks/<str:task_id>/retry/", task_views.TaskRetry.as_view(), name="task-retry"),
    path("share-groups/<str:group>/acquire/", consume_views.ShareAcquire.as_view(), name="share-acquire"),
    path("share-groups/<str:group>/acknowledge/", consume_views.ShareAcknowledge.as_view(), name="share-acknowledge"),
    path("schedules/", schedule_views.ScheduleList.as_view(), name="schedules"),
    path("schedules/<str:name>/", schedule_views.ScheduleDetail.as_view(), name="schedule"),
    path("schedules/<str:name>/enable/", schedule_views.ScheduleEnable.as_view(), name="schedule-enable"),
    path("schedules/<str:name>/disable/", schedule_views.ScheduleDisable.as_view(), name="schedule-disable"),
    path("schedules/<str:name>/run/", schedule_views.ScheduleRun.as_view(), name="schedule-run"),
    path("workflows/", task_views.WorkflowList.as_view(), name="workflows"),
    path("workflows/<str:workflow_id>/", task_views.WorkflowDetail.as_view(), name="workflow"),
    path("workflows/<str:workflow_id>/cancel/", task_views.WorkflowCancel.as_view(), name="workflow-cancel"),
]

# The endpoints /api/ had before versioning, answered as in v1 with a Deprecation header and a Link
# to their successor (api.middleware.Deprecation); anything else under /api/ is a 404 problem.
LEGACY = ("schema/", "topics/", "half-messages/")
legacy = [pattern for pattern in v1 if str(pattern.pattern).startswith(LEGACY)]

urlpatterns = [
    path("v1/", (v1 + [re_path(r"^.*$", errors.not_found)], "api", "v1")),
    path("", (legacy + [re_path(r"^.*$", errors.not_found)], "api", "legacy")),
]
