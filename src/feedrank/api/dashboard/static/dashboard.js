// feedrank dashboard: the only script. A page still being computed reloads itself shortly.
document.addEventListener("DOMContentLoaded", () => {
  const wait = document.querySelector("[data-reload-ms]");
  if (wait) {
    setTimeout(() => window.location.reload(), Number(wait.dataset.reloadMs) || 2000);
  }
});
