/** `microagent audit ...` commands. */
import type { Command } from '../command.js';

export const commands: readonly Command[] = [];
