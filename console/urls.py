"""The console's URLs, under /console/."""
from django.contrib.auth import views as auth_views
from django.urls import path

from console import apikey_views, delayed_views, task_views, views

app_name = "console"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("login/", auth_views.LoginView.as_view(template_name="console/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="console:login"), name="logout"),
    path("overview.json", views.overview_json, name="overview_json"),
    path("topics/", views.topics_page, name="topics"),
    path("topics/create", views.create_topic, name="create_topic"),
    path("topics/<str:name>/partitions", views.add_partitions, name="add_partitions"),
    path("topics/<str:name>/delete", views.delete_topic, name="delete_topic"),
    path("topics/<str:name>/messages/", views.messages_page, name="messages"),
    path("dead-letters/", views.dead_letters, name="dead_letters"),
    path("dead-letters/<str:name>/", views.dead_letter_topic, name="dead_letter_topic"),
    path("dead-letters/<str:name>/redrive", views.redrive, name="redrive"),
    path("dead-letters/<str:name>/purge", views.purge_dead_letters, name="purge_dead_letters"),
    path("groups/", views.groups, name="groups"),
    path("groups/<str:name>/", views.group, name="group"),
    path("share-groups/<str:name>/", views.share_group, name="share_group"),
    path("groups/<str:name>/lag.json", views.group_json, name="group_json"),
    path("groups/<str:name>/reset/", views.reset_plan, name="reset_plan"),
    path("groups/<str:name>/reset/execute", views.reset_execute, name="reset_execute"),
    path("half-messages/", views.half_messages, name="half_messages"),
    path("half-messages/<uuid:message_id>/commit", views.resolve_half_message, {"decision": "commit"},
         name="commit_half_message"),
    path("half-messages/<uuid:message_id>/rollback", views.resolve_half_message, {"decision": "rollback"},
         name="rollback_half_message"),
    path("outbox/", views.outbox_page, name="outbox"),
    path("outbox/retry", views.outbox_retry, name="outbox_retry"),
    path("delayed/", delayed_views.delayed_page, name="delayed"),
    path("delayed/<int:delayed_id>/cancel", delayed_views.cancel, name="cancel_delayed"),
    path("delayed/<int:delayed_id>/reschedule", delayed_views.reschedule, name="reschedule_delayed"),
    path("tasks/", task_views.tasks_page, name="tasks"),
    path("tasks/<uuid:task_id>/retry", task_views.task_action, {"action": "retry"}, name="retry_task"),
    path("tasks/<uuid:task_id>/cancel", task_views.task_action, {"action": "cancel"}, name="cancel_task"),
    path("schedules/", task_views.schedules_page, name="schedules"),
    path("schedules/<str:name>/enable", task_views.schedule_action, {"action": "enable"}, name="enable_schedule"),
    path("schedules/<str:name>/disable", task_views.schedule_action, {"action": "disable"}, name="disable_schedule"),
    path("schedules/<str:name>/run", task_views.schedule_action, {"action": "run"}, name="run_schedule"),
    path("audit/", views.audit_log, name="audit"),
    path("api-keys/", apikey_views.api_keys_page, name="api_keys"),
    path("api-keys/create", apikey_views.create_api_key, name="create_api_key"),
    path("api-keys/<str:prefix>/revoke", apikey_views.revoke_api_key, name="revoke_api_key"),
]
