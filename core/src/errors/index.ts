export { MeterdError, isMeterdError } from './meterd-error.js';
export { ApiError, errorBody, upstreamError } from './api-error.js';
export { ERROR_CODES, statusOf, type ErrorCode } from './codes.js';
export { renderErrorsDoc } from './docs.js';
