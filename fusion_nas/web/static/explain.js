// The trial page's "Inside the network" panel: fetch /api/explain on demand, draw its figures.
(function () {
  "use strict";
  const button = document.getElementById("explain-button");
  if (!button) return;
  const status = document.getElementById("explain-status");
  const box = document.getElementById("explain-plots");
  button.addEventListener("click", async function () {
    button.disabled = true;
    status.textContent = "Computing (this may re-run the trial's proxy training)...";
    try {
      const response = await fetch(button.dataset.url, { headers: { Accept: "application/json" } });
      const data = await response.json();
      if (!response.ok) throw new Error(data.error || "HTTP " + response.status);
      status.textContent = "Weights: " + data.source + "; validation accuracy " +
        (data.accuracy === null ? "–" : data.accuracy.toFixed(4)) + " on " + data.val_samples + " samples.";
      box.replaceChildren();
      for (const [key, fig] of Object.entries(data.figures)) {
        const div = document.createElement("div");
        div.className = "plot";
        div.dataset.figure = key;
        box.appendChild(div);
        await Plotly.newPlot(div, fig.data, fig.layout, { responsive: true, displaylogo: false });
      }
      button.remove(); // computed: the figures stay, nothing to ask again
    } catch (err) {
      status.textContent = "Cannot explain this trial: " + err.message;
      button.disabled = false;
    }
  });
})();
