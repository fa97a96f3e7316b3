// The node's JSON API. A refusal comes back as {"error": "..."} with the node's own message.

export class ApiError extends Error {}

async function call(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: `the node answered ${response.status}` }));
  if (!response.ok) throw new ApiError(data.error || `the node answered ${response.status}`);
  return data;
}

export const get = (path, query = {}) => {
  const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
  return call("GET", params.toString() ? `${path}?${params}` : path);
};
export const post = (path, body = {}) => call("POST", path, body);
