/**
 * `--help` reads well at any terminal width: descriptions carry no hard line breaks inside a sentence (commander
 * wraps them itself), while breaks after a sentence or before a list are kept.
 */
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { createProgram, reflowDescription } from '../../cli/program.ts';

const allCommands = (command: Command): Command[] => [
  command,
  ...command.commands.flatMap((sub) => allCommands(sub)),
];

describe('help text', () => {
  it.each([
    ['joins a break inside a sentence', 'one two\nthree.', 'one two three.'],
    ['keeps a break after a sentence', 'One.\nTwo.', 'One.\nTwo.'],
    ['keeps a break after a colon', 'Options:\nmore', 'Options:\nmore'],
    ['keeps a paragraph break', 'One\n\nTwo', 'One\n\nTwo'],
    ['keeps a break before an indented line', 'Examples\n  blackcloud up', 'Examples\n  blackcloud up'],
    ['keeps a break before a list item', 'Kinds\n- gate', 'Kinds\n- gate'],
  ])('reflowDescription %s', (_title, input, expected) => {
    expect(reflowDescription(input)).toBe(expected);
  });

  it('every command has a description or summary, none with a line broken inside a sentence', () => {
    const program = createProgram({ out: () => undefined, err: () => undefined });
    const commands = allCommands(program);
    expect(commands.length).toBeGreaterThan(10);
    for (const command of commands) {
      const text = command.description();
      expect(text || command.summary(), `blackcloud ${command.name()} has no description`).not.toBe('');
      expect(text, `blackcloud ${command.name()}`).not.toMatch(/[^.:!?\n]\n(?=[^\s-])/);
    }
  });

  it('no example puts a data directory in a world-writable folder such as the temporary folder', () => {
    const program = createProgram({ out: () => undefined, err: () => undefined });
    const commands = allCommands(program);
    for (const command of commands) {
      let help = '';
      command.configureOutput({ writeOut: (text) => (help += text), writeErr: () => undefined });
      command.outputHelp();
      expect(help, `blackcloud ${command.name()} --help`).not.toMatch(
        /--data-dir\s+\/(tmp|var\/tmp|dev\/shm)\b/,
      );
    }
    // The check reads the real help: an example with a data directory is there to be checked.
    let upHelp = '';
    const up = commands.find((command) => command.name() === 'up')!;
    up.configureOutput({ writeOut: (text) => (upHelp += text), writeErr: () => undefined });
    up.outputHelp();
    expect(upHelp).toContain('--data-dir ~/blackcloud-lab');
  });
});
