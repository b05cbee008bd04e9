// The taskfleet dashboard's behaviour beyond htmx: a workflow's page follows the workflow's
// event stream, changing each task's state where it is shown (DAG node, table row) and asking
// the page's parts to refresh; the cancel and retry buttons say how their call went.
(function () {
  "use strict";

  // Tells the page's refreshing parts (hx-trigger="taskfleet:changed from:body") that
  // something changed, at most a few times a second.
  var pending = null;
  function changed() {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      document.body.dispatchEvent(new Event("taskfleet:changed"));
    }, 300);
  }

  function follow(root) {
    var source = new EventSource(root.dataset.workflowEvents);
    source.addEventListener("task", function (message) {
      var event = JSON.parse(message.data);
      var nodes = document.querySelectorAll('[data-task-idx="' + event.task_idx + '"]');
      nodes.forEach(function (node) {
        node.setAttribute("data-state", event.state);
        node.querySelectorAll(".state-name").forEach(function (name) {
          name.textContent = event.state;
          name.setAttribute("data-state", event.state);
        });
      });
      changed();
    });
    source.addEventListener("workflow", function (message) {
      var event = JSON.parse(message.data);
      root.setAttribute("data-workflow-state", event.state);
      if (event.state !== "running") {
        // The stream ends with the workflow; do not let the browser open it again.
        source.close();
      }
      changed();
    });
    // Fell behind: what the page shows may be stale, so read it all again.
    source.addEventListener("lagged", function () {
      window.location.reload();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.querySelector("[data-workflow-events]");
    if (root) follow(root);
  });

  // The outcome of a cancel or retry button, next to it.
  document.addEventListener("htmx:afterRequest", function (event) {
    var button = event.detail.elt;
    if (!button || !button.dataset || !button.dataset.action) return;
    var result = document.getElementById("action-result");
    var xhr = event.detail.xhr;
    if (event.detail.successful) {
      if (result) result.textContent = button.dataset.action === "cancel" ? "Cancelling…" : "Running again…";
      if (button.dataset.action === "retry") {
        // A retried workflow runs again: follow it from the start.
        window.location.reload();
      } else {
        changed();
      }
      return;
    }
    var message = "HTTP " + xhr.status;
    try {
      message = JSON.parse(xhr.responseText).error || message;
    } catch (ignored) {
      // Not JSON: the status says enough.
    }
    if (result) result.textContent = message;
  });
})();
